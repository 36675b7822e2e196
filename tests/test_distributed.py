"""Two processes with two CPU devices each against one process with four."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import pqd_jax
from pqd_jax import distributed
from pqd_jax.autoencoder import latents
from tests.conftest import ROOT, fake_device_env
from tests.test_main import _small_fmnist


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch(num_processes: int, devices_per_process: int, workdir) -> dict:
  env = fake_device_env(devices_per_process)
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "tests.multiprocess_job", str(i),
       str(num_processes), str(port), str(workdir)],
      env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(num_processes)]
  for p in procs:
    try:
      _, err = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    assert p.returncode == 0, err[-3000:]
  with open(os.path.join(workdir, "result.json")) as f:
    result = json.load(f)
  result["reads"] = []
  for i in range(num_processes):
    with open(os.path.join(workdir, f"reads{i}.json")) as f:
      result["reads"].append(json.load(f))
  return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  one = _launch(1, 4, tmp_path_factory.mktemp("one_process"))
  two = _launch(2, 2, tmp_path_factory.mktemp("two_processes"))
  return one, two


def test_both_runs_span_four_devices(runs):
  one, two = runs
  assert (one["devices"], one["processes"]) == (4, 1)
  assert (two["devices"], two["processes"]) == (4, 2)


def test_quantize_matches_one_process(runs):
  one, two = runs
  assert two["counts"] == one["counts"]
  np.testing.assert_allclose(two["centroids"], one["centroids"], rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(two["distortion"], one["distortion"], rtol=1e-5)


def test_resumed_student_matches_one_process(runs):
  one, two = runs
  assert one["step"] == two["step"] == 5
  for a, b in zip(one["params"], two["params"], strict=True):
    np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-5)


def test_teacher_matches_one_process(runs):
  one, two = runs
  for a, b in zip(one["teacher_params"], two["teacher_params"], strict=True):
    np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-5)


def test_each_process_reads_only_its_half_of_the_teacher_batches(runs):
  one, two = runs
  # 3 steps of 8 records, plus one read of record 0 for the image shape.
  assert [r["records"] for r in one["reads"]] == [3 * 8 + 1]
  assert [r["records"] for r in two["reads"]] == [3 * 4 + 1, 3 * 4 + 1]


def test_lazy_latents_give_the_in_memory_quantizer(runs):
  _, two = runs
  np.testing.assert_allclose(two["lazy_centroids"], two["memory_centroids"],
                             rtol=1e-6, atol=1e-6)


def test_each_process_reads_only_its_share_of_the_latents(runs):
  one, two = runs
  n = 41 + 36 + 44
  assert [r["latent_rows"] for r in one["reads"]] == [n]
  rows = [r["latent_rows"] for r in two["reads"]]
  assert sum(rows) == n and max(rows) < n


@pytest.mark.parametrize("kwargs,match", [
    (dict(coordinator_address="localhost:1"), "go together"),
    (dict(coordinator_address="localhost", num_processes=2, process_id=0),
     "'host:port'"),
    (dict(coordinator_address="h:1", num_processes=0, process_id=0),
     "num_processes"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=2),
     r"process_id must be an integer in \[0, 2\)"),
])
def test_bad_settings_are_refused(kwargs, match):
  with pytest.raises(ValueError, match=match):
    distributed.initialize(**kwargs)


def test_no_settings_is_a_single_process():
  assert distributed.initialize() is False


@pytest.mark.slow  # 2 processes through every stage: make test-slow
def test_cli_on_two_processes_writes_one_complete_workdir(tmp_path):
  data_dir = _small_fmnist(tmp_path / "data")
  workdir = tmp_path / "run"
  env = fake_device_env(2, PQD_DATA_DIR=str(data_dir))
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "pqd_jax.main", "--config.ipc=3",
       "--config.student.num_steps=4", "--config.report.sweep_ks=1,2",
       f"--workdir={workdir}", f"--coordinator_address=localhost:{port}",
       "--num_processes=2", f"--process_id={i}"],
      env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in range(2)]
  outs = [p.communicate(timeout=900) for p in procs]
  for p, (_, err) in zip(procs, outs, strict=True):
    assert p.returncode == 0, err[-3000:]
  assert "student accuracy" in outs[0][0]
  assert "student accuracy" not in outs[1][0]
  assert (workdir / "results.json").exists()
  assert not (workdir / ".scratch").exists() or not any(
      (workdir / ".scratch").rglob("*.*"))
  z, y = latents.load(str(workdir / "latents"))
  alone = pqd_jax.quantize(z.astype(np.float32), y, 3)
  with np.load(workdir / "quantization" / "quantization.npz") as q:
    np.testing.assert_array_equal(q["counts"], np.asarray(alone.counts))
    np.testing.assert_allclose(q["centroids"], np.asarray(alone.centroids),
                               rtol=1e-5, atol=1e-5)


def test_map_batches_reads_only_each_process_rows(runs):
  one, two = runs
  assert one["mapped_ok"] and two["mapped_ok"]
  assert [r["mapped_rows"] for r in one["reads"]] == [40]
  rows = [r["mapped_rows"] for r in two["reads"]]
  assert sum(rows) == 40 and max(rows) < 40


def test_stream_method_matches_one_process(runs):
  one, two = runs
  assert two["stream_counts"] == one["stream_counts"]
  assert [sum(c) for c in one["stream_counts"]] == [41, 36, 44]
  np.testing.assert_allclose(two["stream_centroids"], one["stream_centroids"],
                             rtol=1e-5, atol=1e-5)


def test_each_process_streams_only_its_classes(runs):
  one, two = runs
  assert [r["streamed_classes"] for r in one["reads"]] == [[0, 1, 2]]
  assert [r["streamed_classes"] for r in two["reads"]] == [[0, 2], [1]]


def test_every_process_gets_the_coordinators_decision(runs):
  _, two = runs
  assert [r["decided"] for r in two["reads"]] == [["digest", 0, True]] * 2
