"""The CLI with the default config on a small IDX directory (a subprocess).

The pipeline's own CLI tests (tiny image folder, kill and resume, one-line
errors for bad flags) are in ``tests/test_pipeline.py``; these run the
*default* Fashion-MNIST config, with the shipped checkpoints, on 80 images.
"""

import json
import os
import subprocess
import sys

import numpy as np

from tests.data.test_fashion_mnist import _write_idx

ROOT = os.path.dirname(os.path.dirname(__file__))


def _run(*args, data_dir):
  env = dict(os.environ, PQD_DATA_DIR=data_dir)
  return subprocess.run([sys.executable, "-m", "pqd_jax.main", *args],
                        capture_output=True, text=True, env=env, cwd=ROOT,
                        timeout=600)


def _small_fmnist(tmp_path, per_class=8):
  tmp_path.mkdir(parents=True, exist_ok=True)
  gen = np.random.default_rng(0)
  labels = np.repeat(np.arange(10), per_class)
  images = gen.integers(0, 256, (len(labels), 28, 28))
  for prefix in ("train", "t10k"):
    _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
  return str(tmp_path)


def test_default_config_runs_every_stage_on_idx_files(tmp_path):
  workdir = tmp_path / "run"
  proc = _run("--config.ipc=3", "--config.student.num_steps=4",
              f"--workdir={workdir}",
              data_dir=_small_fmnist(tmp_path / "data"))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "IPC 3, weights mass" in proc.stdout
  with open(workdir / "results.json") as f:
    results = json.load(f)
  with np.load(workdir / "synthetic" / "set.npz") as s:
    assert tuple(s["image_shape"]) == (28, 28, 1) and len(s["labels"]) == 30
    assert list(s["class_names"])[-1] == "Ankle boot"
  assert len(results["accuracies"]) == 1


def test_the_teachers_pick_of_real_images_runs_from_the_cli(tmp_path):
  workdir = tmp_path / "run"
  proc = _run("--config.ipc=2", "--config.student.num_steps=4",
              "--config.decode.images=nearest", "--config.decode.candidates=3",
              "--config.decode.choose=teacher",
              "--config.student.eval_points=2", f"--workdir={workdir}",
              data_dir=_small_fmnist(tmp_path / "data"))
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(workdir / "results.json") as f:
    results = json.load(f)
  assert [step for step, _ in results["curves"][0]] == [2, 4]
  with open(workdir / "synthetic" / "stage.json") as f:
    stage = json.load(f)
  # The set depends on the teacher that chose it.
  with open(workdir / "teacher" / "stage.json") as f:
    assert json.load(f)["digest"] in stage["upstream"]


def test_ipc_larger_than_a_class_is_a_one_line_error(tmp_path):
  proc = _run("--config.ipc=9", f"--workdir={tmp_path / 'run'}",
              data_dir=_small_fmnist(tmp_path / "data"))
  assert proc.returncode != 0
  # Found before any stage runs, with what to use instead.
  assert proc.stderr.strip().splitlines()[-1].startswith(
      "error: ipc=9 is more than the")
  assert "--config.ipc=" in proc.stderr and not (tmp_path / "run" /
                                                  "autoencoder").exists()


def test_the_summary_gives_the_sample_std_as_results_json_does():
  from pqd_jax import main, pipeline
  from pqd_jax.configs import fashion_mnist

  result = pipeline.RunResult((0.5, 0.7), {"eval": 1.0}, (), "/tmp/run")
  text = main.summary(result, fashion_mnist.get_config())
  assert "student accuracy: 60.00 ± 14.14% over 2 seed(s)" in text


def test_an_unknown_field_with_a_config_file_is_a_one_line_error(tmp_path):
  proc = _run("--config=pqd_jax/configs/tiny.py:/nonexistent",
              "--config.nosuch=1", f"--workdir={tmp_path / 'run'}",
              data_dir=str(tmp_path))
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines() == [
      "error: a --config.<field> flag names a field the config does not "
      "have: 'nosuch'; the fields are those of the --config file."]


_COMPILE = """
import sys
import jax
from jax import monitoring
from pqd_jax import main
hits = []
monitoring.register_event_listener(
    lambda event, **kw: hits.append(event)
    if event == "/jax/compilation_cache/cache_hits" else None)
main.use_compilation_cache(sys.argv[1])
jax.jit(lambda x: x * 3.0 + 1.0)(2.0).block_until_ready()
print(len(hits))
"""


def test_a_fresh_process_loads_the_programs_an_earlier_one_compiled(tmp_path):
  cache = str(tmp_path / "xla_cache")
  run = lambda: subprocess.run(
      [sys.executable, "-c", _COMPILE, cache], capture_output=True,
      text=True, cwd=ROOT, timeout=120, check=True).stdout.split()[-1]
  assert run() == "0" and os.listdir(cache)
  assert int(run()) >= 1
