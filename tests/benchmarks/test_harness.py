"""benchmarks/harness.py: results files, timing, machine limits."""

import json
import os

import harness
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pqd_jax import models, workdir
from pqd_jax.configs import fashion_mnist


def _lines(path):
  with open(path) as f:
    return f.read().splitlines()


def test_a_row_cut_by_a_kill_is_skipped_and_the_next_stays_whole(tmp_path):
  path = str(tmp_path / "out" / "r.jsonl")
  results = harness.Results(path)
  results.append({"cell": "a", "acc": 0.5})
  with open(path, "a") as f:  # a kill in the middle of a row
    f.write('{"cell": "b", "acc": 0.')
  results.append({"cell": "c", "acc": 0.7})
  assert _lines(path)[-1] == json.dumps({"cell": "c", "acc": 0.7})
  assert harness.finished_rows(path) == {
      "a": {"cell": "a", "acc": 0.5}, "c": {"cell": "c", "acc": 0.7}}


def test_the_last_row_of_a_cell_wins_and_rows_without_a_cell_are_skipped(
    tmp_path):
  path = str(tmp_path / "r.jsonl")
  for row in ({"cell": "a", "v": 1}, {"note": "no cell"}, {"cell": 3.5},
              {"cell": "a", "v": 2}):
    workdir.append_jsonl(path, row)
  with open(path, "a") as f:
    f.write("[1, 2]\n\n")
  assert harness.finished_rows(path) == {"a": {"cell": "a", "v": 2}}
  assert harness.finished_rows(str(tmp_path / "missing.jsonl")) == {}


def test_a_cell_of_several_fields_is_their_tuple(tmp_path):
  path = str(tmp_path / "r.jsonl")
  results = harness.Results(path, key=("workload", "method"))
  results.append({"workload": "W1", "method": "faiss", "wall_s": 1.0})
  workdir.append_jsonl(path, {"name": "x", "seed": 0})
  assert set(harness.Results(path, key=("workload", "method")).rows) == {
      ("W1", "faiss")}
  assert set(harness.finished_rows(path, key=("name", "seed"))) == {("x", 0)}


def test_a_row_without_its_cell_is_refused(tmp_path):
  results = harness.Results(str(tmp_path / "r.jsonl"))
  with pytest.raises(ValueError, match="'cell'"):
    results.append({"acc": 1.0})
  assert not os.path.exists(results.path)


def test_finished_cells_are_skipped(tmp_path, capsys):
  path = str(tmp_path / "r.jsonl")
  harness.Results(path).append({"cell": "teacher"})
  results = harness.Results(path)
  assert not results.todo("teacher")
  assert "teacher: done" in capsys.readouterr().out
  assert results.todo("throughput")
  results.append({"cell": "throughput"})
  assert not results.todo("throughput")
  assert results["throughput"] == {"cell": "throughput"}


def test_only_the_cells_asked_for_run(tmp_path):
  path = str(tmp_path / "r.jsonl")
  everything = harness.Results(path, cells="all")
  assert everything.todo("a") and not everything.only("a")
  some = harness.Results(path, cells="a,b")
  assert some.todo("a") and not some.todo("c")
  assert some.only("a", "b", "c") and not some.only("a")
  assert harness.Results(path, cells=["a"]).only("a")


def test_reload_sees_what_another_process_appended(tmp_path):
  path = str(tmp_path / "r.jsonl")
  mine, theirs = harness.Results(path), harness.Results(path)
  theirs.append({"cell": "b"})
  assert "b" not in mine
  assert mine.reload() == {"b": {"cell": "b"}} and "b" in mine


def test_training_curve_keeps_the_evaluated_steps(tmp_path):
  rows = [{"step": 1, "seconds": 0.1, "loss": 2.0},
          {"step": 2, "seconds": 0.2, "loss": 1.0, "acc": 0.4}]
  with open(tmp_path / "metrics.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  assert harness.training_curve(str(tmp_path), "step", "acc") == [
      {"step": 2, "acc": 0.4}]


def test_publish_copy_keeps_a_copy_already_published(tmp_path):
  src, dst = tmp_path / "src", tmp_path / "dst"
  src.mkdir()
  (src / "f").write_text("new")
  harness.publish_copy(str(src), str(dst))
  assert (dst / "f").read_text() == "new"
  (src / "f").write_text("newer")
  harness.publish_copy(str(src), str(dst))
  assert (dst / "f").read_text() == "new"
  assert sorted(os.listdir(tmp_path)) == ["dst", "src"]


def test_time_calls_warms_up_then_times_each_repeat():
  calls = []
  timing = harness.time_calls(lambda: calls.append(1) or len(calls), 3)
  assert len(calls) == 4 and timing.result == 4 and len(timing.times) == 3
  assert timing.best <= timing.median
  assert timing.first >= 0 and min(timing.times) >= 0
  with pytest.raises(ValueError, match="repeats=0"):
    harness.time_calls(lambda: None, 0)


def test_timed_and_time_steps_wait_for_the_arrays():
  out, seconds = harness.timed(jnp.add, jnp.ones(3), 1.0)
  np.testing.assert_array_equal(out, 2.0)
  assert seconds >= 0
  step = jax.jit(lambda x, i: x + 1.0)
  carry, seconds = harness.time_steps(step, jnp.zeros(()), 5)
  assert float(carry) == 6.0 and seconds >= 0  # the warm-up step and 5


def test_lloyd_seconds_per_iteration_is_a_time():
  x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
  y = np.repeat(np.arange(2), 20)
  seconds = harness.lloyd_seconds_per_iteration(x, y, 2, repeats=1)
  assert all(np.isfinite(s) and abs(s) < 1.0 for s in seconds)


def test_machine_names_the_architecture_and_cores():
  assert harness.machine().endswith(f", {os.cpu_count()} cores")


@pytest.mark.slow
def test_machine_limits_are_positive_rates():
  limits = harness.machine_limits(repeats=1)
  assert set(limits) == {"numpy_gflops", "xla_gflops", "copy_gbs"}
  assert all(v > 0 for v in limits.values())


def test_the_fmnist_teacher_is_the_configs():
  model, variables = harness.fmnist_teacher()
  assert variables is None
  assert model == models.build_classifier(
      fashion_mnist.get_config().teacher, 10)


def test_parse_ints_keeps_the_order_and_drops_repeats():
  assert harness.parse_ints("10,1,10,50", "--ipcs") == [10, 1, 50]
  assert harness.parse_ints("8,8,16", "--blocks", unique=False) == [8, 8, 16]
  assert harness.parse_ints("0,2", "--workers", minimum=0) == [0, 2]


@pytest.mark.parametrize("spec, match", [
    ("1,a", r"--ipcs: 'a' is not an integer >= 1"),
    ("0", r"--ipcs: '0' is not an integer >= 1"),
    (",", r"--ipcs: ',' has no value")])
def test_parse_ints_names_the_flag_and_the_bad_item(spec, match):
  with pytest.raises(ValueError, match=match):
    harness.parse_ints(spec, "--ipcs")


def test_compiled_flops_counts_a_matmul_as_two_n_cubed():
  n = 64
  x = jnp.ones((n, n), jnp.float32)
  compiled = jax.jit(lambda a, b: a @ b).lower(x, x).compile()
  assert harness.compiled_flops(compiled) == 2 * n ** 3
