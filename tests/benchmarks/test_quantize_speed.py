"""benchmarks/quantize_speed.py: the report from its results files."""

import json

import quantize_speed


def test_the_report_reads_the_finished_cells_past_a_cut_line(tmp_path,
                                                             capsys):
  out = tmp_path / "q.jsonl"
  spec = quantize_speed.WORKLOADS["W1"]
  rows = [{"workload": "W1", "method": m, **spec, "wall_s": wall,
           "times_s": [wall], "compile_s": None, "iters_mean": 10.0,
           "iters_max": 12, "distortion": 2.0}
          for m, wall in (("sklearn_kmeans", 2.0), ("pqd_lloyd", 1.0))]
  out.write_text("".join(json.dumps(r) + "\n" for r in rows)
                 + '{"workload": "W1", "meth')
  quantize_speed.main(["--report", f"--out={out}"])
  table = capsys.readouterr().out
  assert "### W1: C=10 N_c=6000 D=64 K=10" in table
  assert "| pqd_lloyd | 1.000 s | - | 10.0 / 12 | 2.0000 | 1.0000 | 0.50x |" \
      in table


def _run_files(tmp_path, walls):
  """One results file per run, pqd_lloyd and faiss on W2 at ``walls``."""
  spec = quantize_speed.WORKLOADS["W2"]
  paths = []
  for i, (pqd, faiss) in enumerate(walls):
    rows = [{"workload": "W2", "method": m, **spec, "wall_s": wall,
             "distortion": dist}
            for m, wall, dist in (("pqd_lloyd", pqd, 1.002),
                                  ("faiss", faiss, 1.01))]
    if i == 0:
      rows.append({"workload": "W2", "method": "sklearn_kmeans", **spec,
                   "wall_s": 5.0, "distortion": 1.0})
    path = tmp_path / f"r{i}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / f"r{i}_limits.jsonl").write_text(json.dumps(
        {"workload": "W2", "per_iter_ms": 3.0 * (i + 1), "floor_ms": 1.0})
        + "\n")
    paths.append(str(path))
  return ",".join(paths)


def test_the_summary_takes_the_median_ratio_of_the_runs(tmp_path, capsys):
  runs = _run_files(tmp_path, [(1.2, 1.0), (0.9, 1.0), (0.95, 1.0)])
  quantize_speed.main(["--summary", f"--out={runs}"])
  line = capsys.readouterr().out.splitlines()[1]
  assert line.startswith("W2: time / faiss 0.95 (runs 1.20, 0.90, 0.95; "
                         "target <= 1: met)")
  assert "distortion / sklearn 1.0020 (target <= 1.005: met)" in line
  assert "iteration / floor 6.00 (runs 3.00, 6.00, 9.00; medians of each " \
      "run's repeats 3.00, 6.00, 9.00; target <= 2.5: MISSED)" in line


def test_the_summary_judges_the_iteration_by_the_best_runs(tmp_path, capsys):
  runs = _run_files(tmp_path, [(1.0, 1.0)] * 3)
  for i in range(3):
    (tmp_path / f"r{i}_limits.jsonl").write_text(json.dumps(
        {"workload": "W2", "per_iter_ms": 5.0, "per_iter_best_ms": 1.0 + i,
         "floor_ms": 1.0}) + "\n")
  quantize_speed.main(["--summary", f"--out={runs}"])
  line = capsys.readouterr().out.splitlines()[1]
  assert "iteration / floor 2.00 (runs 1.00, 2.00, 3.00; medians of each " \
      "run's repeats 5.00, 5.00, 5.00; target <= 2.5: met)" in line
