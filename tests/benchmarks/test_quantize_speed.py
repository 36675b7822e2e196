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
