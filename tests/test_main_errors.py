"""The CLI as a hostile user meets it: every anticipated error is one line.

Each case runs ``python -m pqd_jax.main`` (a subprocess, a few seconds) on
the tiny image folder with one thing wrong, through each way of passing a
config (``--dataset``, ``--config=<file>``, ``--config=<file>:<arg>`` and
``--config.<field>`` overrides), and checks that it exits non-zero with a
single ``error: ...`` line on stderr that says what is wrong, before any
stage has written anything (a damaged image, found when it is read, after
the progress bars of the stage reading it).
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.tiny_folders import write_folder

TINY = os.path.join(ROOT, "pqd_jax", "configs", "tiny.py")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return write_folder(str(tmp_path_factory.mktemp("folder")))


def _copy(folder, tmp_path):
  root = str(tmp_path / "data")
  shutil.copytree(folder, root)
  return root


def _tiny(root, *overrides):
  return [f"--config={TINY}:{root}", *overrides]


def _syntax_error(folder, tmp_path):
  bad = tmp_path / "config.py"
  bad.write_text("def get_config(:\n")
  return [f"--config={bad}"]


def _missing_test_class(folder, tmp_path):
  root = _copy(folder, tmp_path)
  shutil.rmtree(os.path.join(root, "test", "bar"))
  return _tiny(root)


def _empty_train_class(folder, tmp_path):
  root = _copy(folder, tmp_path)
  for name in os.listdir(os.path.join(root, "train", "left")):
    os.remove(os.path.join(root, "train", "left", name))
  return _tiny(root)


def _truncated_png(folder, tmp_path):
  root = _copy(folder, tmp_path)
  png = os.path.join(root, "train", "bar", "3.png")
  os.truncate(png, os.path.getsize(png) // 2)
  return _tiny(root)


def _truncated_idx(folder, tmp_path):
  from tests.test_main import _small_fmnist

  data = _small_fmnist(tmp_path / "fmnist")
  gz = os.path.join(data, "t10k-labels-idx1-ubyte.gz")
  os.truncate(gz, os.path.getsize(gz) // 2)
  return [f"--config.data_dir={data}", "--config.ipc=2"]


CASES = {
    "config file missing": (
        lambda folder, tmp: [f"--config={tmp}/nonexistent.py"],
        r"--config: cannot load the config file: \[Errno 2\] No such file"),
    "config file with a syntax error": (
        _syntax_error, r"--config file .*config.py, line 1: invalid syntax"),
    "a word for an integer field": (
        lambda folder, tmp: _tiny(folder, "--config.teacher.width=abc"),
        "flag --config.teacher.width=abc: invalid literal for int"),
    "zero width, default config": (
        lambda folder, tmp: ["--config.teacher.width=0"],
        r"config.teacher.width must be >= 1, got 0"),
    "zero width, config file": (
        lambda folder, tmp: _tiny(folder, "--config.student.width=0"),
        r"config.student.width must be >= 1, got 0"),
    "no prior steps": (
        lambda folder, tmp: _tiny(folder, "--config.prior.num_steps=0"),
        r"config.prior.num_steps must be >= 1, got 0"),
    "a UNet the norms cannot group": (
        lambda folder, tmp: _tiny(folder,
                                  "--config.prior.block_out_channels=(48,)"),
        r"config.prior: block_out_channels must be non-empty multiples of 32"),
    "a ConvNet deeper than its inputs": (
        lambda folder, tmp: _tiny(folder, "--config.teacher.depth=4"),
        r"config.teacher.depth=4 halves the 8-pixel inputs 4 times"),
    "ipc above the smallest class": (
        lambda folder, tmp: _tiny(folder, "--config.ipc=13"),
        r"ipc=13 is more than the"),
    "a test split without a class": (
        _missing_test_class, r"missing \['bar'\]"),
    "an empty class folder": (
        _empty_train_class, r"training classes \['left'\] have no images"),
    # Found when the image is read (the autoencoder's training), after the
    # progress bars.
    "a truncated training image": (
        _truncated_png, r"cannot read .*/train/bar/3.png: .*truncated.*; the "
        "file is truncated or corrupt: fetch or copy it again"),
    "a truncated Fashion-MNIST file": (
        _truncated_idx, r"cannot read .*t10k-labels-idx1-ubyte.gz: EOFError"),
    "attention heads that do not split the channels": (
        lambda folder, tmp: _tiny(folder,
                                  "--config.prior.attention_head_dim=3"),
        r"config.prior: attention_head_dim=3 \(the number of attention "
        r"heads\) must divide"),
    "a student batch the passes cannot split": (
        lambda folder, tmp: _tiny(folder, "--config.student.batch_size=12",
                                  "--config.student.grad_accumulation=4"),
        r"the student's batch is 6 images \(config.student.batch_size=12, "
        r"capped at the set's 6\), which does not split into 1 device\(s\) "
        r"x 4 pass\(es\)"),
    "an unknown flag": (
        lambda folder, tmp: ["--ipc=3"], r"Unknown command line flag 'ipc'"),
    "a positional argument": (
        lambda folder, tmp: _tiny(folder, "distill"),
        r"unexpected arguments \['distill'\]"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_anticipated_error_is_one_line(case, folder, tmp_path):
  make_args, message = CASES[case]
  workdir = tmp_path / "run"
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "pqd_jax.main",
       *make_args(folder, tmp_path), f"--workdir={workdir}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr, proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and re.search(message, last), last
  if case != "a truncated training image":  # checked before any stage
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not os.path.exists(workdir / "autoencoder")
