"""benchmarks/distill_table.py on the tiny pipeline config."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from pqd_jax.configs.tiny import get_config
from pqd_jax.data import synthetic
from tests.conftest import ROOT, load_script
from tests.tiny_folders import write_folder

CONFIG_FILE = os.path.join(ROOT, "pqd_jax", "configs", "tiny.py")
METHODS = ("random", "whole", "ddoq", "typical-f2")


@pytest.fixture(scope="module")
def bench():
  return load_script("benchmarks", "distill_table.py")


@pytest.fixture(scope="module")
def finished(bench, tmp_path_factory):
  tmp = tmp_path_factory.mktemp("bench")
  root = write_folder(str(tmp / "folder"))
  args = ["--budget=A", "--seeds=2", "--ipcs=2", "--labels=soft,hard",
          f"--methods={','.join(METHODS)}",
          f"--config={CONFIG_FILE}:{root}", "--steps-scale=0.004",
          f"--workroot={tmp / 'work'}", f"--out={tmp / 'fair.jsonl'}",
          f"--table={tmp / 'fair.md'}"]
  bench.main(args)
  return args, tmp


def _rows(tmp):
  with open(tmp / "fair.jsonl") as f:
    return [json.loads(line) for line in f]


def test_every_cell_is_recorded_once_per_seed(finished):
  _, tmp = finished
  cells = sorted(r["cell"] for r in _rows(tmp))
  expected = sorted(
      f"{m}_ipc2_A_{labels}_seed{s}" for s in (0, 1) for m in METHODS
      for labels in ("soft", "hard") if not (m == "whole" and labels == "hard"))
  assert cells == expected


def test_each_student_has_a_curve_that_ends_at_its_last_step(finished):
  _, tmp = finished
  for row in _rows(tmp):
    steps = [step for step, _ in row["curve"]]
    assert steps[-1] == row["student_steps"] and len(steps) <= 8, row["cell"]


def test_a_seed_redraws_the_set(finished):
  _, tmp = finished
  sets = []
  for seed in (0, 1):
    images, labels, _ = synthetic.load_set(
        str(tmp / "work" / f"random_ipc2_A_soft_seed{seed}" / "synthetic"))
    sets.append(images.take(np.arange(len(labels))))
  assert not np.array_equal(*sets)


def test_the_table_has_every_method_the_differences_and_plots(finished):
  _, tmp = finished
  table = (tmp / "fair.md").read_text()
  assert "## Budget A" in table and "| Δ IPC 2 |" in table
  for method in METHODS:
    assert f"| {method} |" in table
  assert (tmp / "fair_vs_ipc_A.png").exists()
  assert (tmp / "fair_vs_steps_A.png").exists()


def _stage(tmp, cell, artefact="synthetic"):
  with open(tmp / "work" / cell / artefact / "stage.json") as f:
    return json.load(f)


def test_a_cell_starts_from_the_set_of_its_sibling(finished):
  _, tmp = finished
  for artefact in ("quantization", "synthetic"):
    assert (_stage(tmp, "ddoq_ipc2_A_hard_seed0", artefact)
            == _stage(tmp, "ddoq_ipc2_A_soft_seed0", artefact))


def test_a_donor_with_another_set_is_remade(bench, finished):
  args, tmp = finished
  config_arg = next(a for a in args if a.startswith("--config="))
  base = bench.distill_accuracy.load_config(config_arg.split("=", 1)[1])
  config = bench.cell_config(base, "ddoq", 2, "A", "hard", 0,
                             whole_ipc=bench.smallest_class(base),
                             steps_scale=0.004)
  bench.distill_accuracy.run_cell("donated", config, str(tmp / "work"),
                                  donors=["ddoq_ipc2_A_soft_seed1"])
  mine = _stage(tmp, "donated")["digest"]
  assert mine == _stage(tmp, "ddoq_ipc2_A_hard_seed0")["digest"]
  assert mine != _stage(tmp, "ddoq_ipc2_A_soft_seed1")["digest"]


def test_a_cell_with_its_twins_config_takes_its_row(bench, finished):
  args, tmp = finished
  keep = [a for a in args if a.startswith(("--config=", "--steps-scale=",
                                           "--workroot="))]
  bench.main(keep + ["--budget=B", "--seeds=1", "--ipcs=2,3",
                     "--methods=whole", f"--out={tmp / 'twins.jsonl'}",
                     f"--table={tmp / 'twins.md'}"])
  with open(tmp / "twins.jsonl") as f:
    rows = {r["cell"]: r for r in map(json.loads, f)}
  first = rows["whole_ipc2_B_soft_seed0"]
  second = rows["whole_ipc3_B_soft_seed0"]
  assert second["same_run_as"] == first["cell"]
  assert (second["accuracy"], second["curve"]) == (first["accuracy"],
                                                   first["curve"])
  assert second["seconds"] == 0.0 and "same_run_as" not in first


def test_a_second_run_adds_nothing(bench, finished):
  args, tmp = finished
  before = len(_rows(tmp))
  bench.main(args)
  assert len(_rows(tmp)) == before


def test_another_student_budget_is_refused(bench, finished):
  args, _ = finished
  with pytest.raises(SystemExit):
    bench.main([a for a in args if not a.startswith("--steps-scale")]
               + ["--steps-scale=0.008"])


def test_the_paired_interval_is_scipys(bench):
  a, b = [0.80, 0.82, 0.85, 0.79], [0.78, 0.80, 0.81, 0.80]
  mean, half = bench.paired(a, b)
  ci = stats.ttest_rel(a, b).confidence_interval(0.95)
  assert math.isclose(mean - half, ci.low) and math.isclose(mean + half,
                                                            ci.high)


def test_lrs_is_dd_rankings_score(bench):
  low = math.exp(-1.0)
  assert math.isclose(bench.lrs(0.0, 0.0), (1 - low) / (math.e - low))
  assert math.isclose(bench.lrs(2.0, 0.0), 1.0)  # α = 1
  assert bench.lrs(0.05, 0.1) < bench.lrs(0.05, 0.0)


def test_a_new_field_at_its_default_keeps_a_cell(bench):
  base = get_config("x")
  stored = json.loads(json.dumps(bench.workdir.to_jsonable(base)))
  del stored["student"]["eval_images"]  # a field added since
  assert bench.same_config(stored, base, base)
  changed = base.copy_and_resolve_references()
  changed.student.eval_images = 50
  assert not bench.same_config(stored, changed, base)
  changed = base.copy_and_resolve_references()
  changed.student.width += 1
  assert not bench.same_config(stored, changed, base)


def test_parameterised_storage_sees_as_many_images_per_step(bench):
  base = get_config("x")
  for ipc, budget, steps, batch in ((10, "A", 300, 25), (1, "A", 75, 10),
                                    (1, "B", 2000, 25)):
    c = bench.cell_config(base, "random-f2", ipc, budget, "soft", 0,
                          whole_ipc=3)
    assert (c.student.num_steps, c.student.batch_size) == (steps, batch)
    plain = bench.cell_config(base, "random", ipc, budget, "soft", 0,
                              whole_ipc=3)
    assert (c.student.num_steps * batch * 4
            == plain.student.num_steps * plain.student.batch_size)


def test_a_live_claim_is_respected_and_a_dead_one_taken(bench, tmp_path):
  other = subprocess.Popen([sys.executable, "-c",
                            "import time; time.sleep(30)"])
  try:
    (tmp_path / "cell.claim").write_text(str(other.pid))
    assert not bench.claim(str(tmp_path), "cell")
  finally:
    other.kill()
    other.wait()
  assert bench.claim(str(tmp_path), "cell")
  assert (tmp_path / "cell.claim").read_text() == str(os.getpid())
  bench.release(str(tmp_path), "cell")
  assert not (tmp_path / "cell.claim").exists()


def test_the_advice_is_the_largest_difference_resolved_above_zero(bench):
  def row(method, seed, acc):
    return {"method": method, "ipc": 10, "budget": "A", "labels": "soft",
            "seed": seed, "accuracy": acc}

  rows = {}
  for seed, (base, steady, noisy) in enumerate(
      [(0.70, 0.72, 0.80), (0.71, 0.73, 0.66), (0.72, 0.74, 0.82)]):
    for method, acc in (("random", base), ("ddoq", steady),
                        ("typical", noisy)):
      rows[f"{method}{seed}"] = row(method, seed, acc)
  entries = {m: [bench.summary(rows, m, 10, "A")]
             for m in ("random", "ddoq", "typical")}
  lines = bench.best_lines(entries, [10], ["random", "ddoq", "typical"])
  assert lines[-1].startswith("- IPC 10: **ddoq**, +2.0 ± 0.0")


def test_both_budgets_take_hlr_from_the_one_hard_label_protocol(bench):
  def row(method, budget, labels, seed, acc):
    return {"method": method, "ipc": 10, "budget": budget, "labels": labels,
            "seed": seed, "accuracy": acc, "teacher_accuracy": 0.90}

  rows = {}
  for seed in range(2):
    for budget in ("A", "B"):
      rows[f"r{budget}{seed}"] = row("random", budget, "soft", seed, 0.70)
      rows[f"d{budget}{seed}"] = row("ddoq", budget, "soft", seed, 0.72)
    rows[f"h{seed}"] = row("ddoq", bench.HARD_BUDGET, "hard", seed, 0.60)
  for budget in ("A", "B"):
    entry = bench.summary(rows, "ddoq", 10, budget)
    assert math.isclose(entry["hlr"], 30.0)
    assert math.isclose(entry["lrs"], bench.lrs(0.02, 0.30))


def test_hard_labels_without_the_hard_label_budget_are_refused(bench,
                                                               tmp_path):
  with pytest.raises(SystemExit):
    bench.main(["--budget=B", "--labels=hard", "--table-only",
                f"--out={tmp_path / 'fair.jsonl'}",
                f"--table={tmp_path / 'fair.md'}"])
