"""The CLI end to end on a small IDX directory (a real subprocess)."""

import os
import subprocess
import sys

import numpy as np

from tests.data.test_fashion_mnist import _write_idx

ROOT = os.path.dirname(os.path.dirname(__file__))


def _run(*args, data_dir=None):
  env = dict(os.environ)
  if data_dir:
    env["PQD_DATA_DIR"] = data_dir
  return subprocess.run([sys.executable, "-m", "pqd_jax.main", *args],
                        capture_output=True, text=True, env=env, cwd=ROOT,
                        timeout=600)


def _small_fmnist(tmp_path, per_class=8):
  gen = np.random.default_rng(0)
  labels = np.repeat(np.arange(10), per_class)
  images = gen.integers(0, 256, (len(labels), 28, 28))
  for prefix in ("train", "t10k"):
    _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
  return str(tmp_path)


def test_main_quantizes_every_class(tmp_path):
  proc = _run("--config.ipc=3", data_dir=_small_fmnist(tmp_path))
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "Ankle boot" in proc.stdout
  assert "80 images of 784 pixels, 10 classes, IPC 3" in proc.stdout


def test_ipc_larger_than_a_class_is_a_one_line_error(tmp_path):
  proc = _run("--config.ipc=9", data_dir=_small_fmnist(tmp_path))
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1].startswith("error: k=9")


def test_unknown_dataset_is_a_one_line_error():
  proc = _run("--dataset=cifar1000")
  assert proc.returncode != 0
  assert "unknown --dataset='cifar1000'" in proc.stderr


def test_unknown_config_field_is_rejected():
  proc = _run("--config.ipcc=3")
  assert proc.returncode != 0
