import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pqd_jax import pipeline
from pqd_jax.configs.tiny import get_config
from pqd_jax.data import splits, synthetic
from pqd_jax.stages import train as train_stage
from tests.conftest import ROOT
from tests.tiny_folders import write_folder

CONFIG_FILE = os.path.join(ROOT, "pqd_jax", "configs", "tiny.py")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  return write_folder(str(tmp_path_factory.mktemp("folder")))


@pytest.fixture(scope="module")
def finished(data_root, tmp_path_factory):
  """One uninterrupted run of the whole pipeline."""
  workdir = str(tmp_path_factory.mktemp("run"))
  result = pipeline.run(get_config(data_root), workdir, progress=False,
                        log=lambda line: None)
  return workdir, result


def _copy(finished, tmp_path):
  dst = str(tmp_path / "run")
  shutil.copytree(finished[0], dst)
  return dst


def test_every_artefact_is_written(finished):
  workdir, result = finished
  for name in ("config.json", "autoencoder/final/config.json",
               "latents/index.json", "quantization/quantization.npz",
               "prior/final/prior.json", "synthetic/set.npz",
               "synthetic/grid.png", "synthetic/folder/weights.csv",
               "student/seed0/stage.json", "student/seed1/stage.json",
               "teacher/stage.json", "eval/results.json", "results.json",
               "report.md"):
    assert os.path.exists(os.path.join(workdir, name)), name
  images, labels, weights = synthetic.load_set(
      os.path.join(workdir, "synthetic"))
  assert images.shape == (6, 8, 8, 1)
  np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])
  np.testing.assert_allclose(weights.reshape(3, 2).mean(1), 1.0, rtol=1e-6)
  with np.load(os.path.join(workdir, "synthetic", "set.npz")) as s:
    assert list(s["class_names"]) == ["bar", "left", "right"]
  pngs = [f for _, _, fs in os.walk(os.path.join(workdir, "synthetic",
                                                 "folder"))
          for f in fs if f.endswith(".png")]
  assert len(pngs) == 6
  assert len(result.accuracies) == 2
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["accuracies"] == list(result.accuracies)


def test_the_sweep_at_k_equal_ipc_is_the_quantization_itself(finished):
  workdir, _ = finished
  with np.load(os.path.join(workdir, "quantization_sweep", "sweep.npz")) as s:
    ks, sweep = list(s["ks"]), s["distortion"]
  with np.load(os.path.join(workdir, "quantization",
                            "quantization.npz")) as q:
    np.testing.assert_allclose(sweep[ks.index(2)], q["distortion"],
                               rtol=1e-6)


def test_the_report_has_the_distortion_plot(finished):
  workdir, _ = finished
  with open(os.path.join(workdir, "report.md")) as f:
    report = f.read()
  assert "## Distortion versus K" in report
  assert "![distortion vs K](quantization_sweep/distortion_vs_k.png)" in report
  assert os.path.exists(os.path.join(workdir, "quantization_sweep",
                                     "distortion_vs_k.png"))


def test_a_second_ipc_adds_accuracy_versus_ipc_to_the_report(finished,
                                                              tmp_path):
  workdir = _copy(finished, tmp_path)
  config = get_config(finished_root(finished))
  config.ipc = 1
  pipeline.run(config, workdir, progress=False, log=lambda line: None)
  with open(os.path.join(workdir, "report.md")) as f:
    report = f.read()
  assert "## Accuracy versus IPC" in report
  assert "| 1 | " in report and "| 2 | " in report
  assert os.path.exists(os.path.join(workdir, "accuracy_vs_ipc.png"))


def test_a_second_run_skips_every_stage(finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  result = pipeline.run(get_config(finished_root(finished)), workdir,
                        progress=False, log=lambda line: None)
  assert result.seconds == {}
  assert result.accuracies == finished[1].accuracies


def finished_root(finished):
  with open(os.path.join(finished[0], "config.json")) as f:
    return json.load(f)["dataset"][len("folder:"):]


def test_a_changed_config_recomputes_only_what_depends_on_it(finished,
                                                             tmp_path):
  workdir = _copy(finished, tmp_path)
  config = get_config(finished_root(finished))
  config.decode.strength = 0.75
  result = pipeline.run(config, workdir, progress=False,
                        log=lambda line: None)
  assert set(result.seconds) == {"synthetic", "student/seed0",
                                 "student/seed1", "eval"}
  assert {"autoencoder", "latents", "quantization", "prior",
          "teacher"} <= set(result.skipped)
  aside = [d for d in os.listdir(workdir) if d.startswith("synthetic.")]
  assert len(aside) == 1  # the old set is kept, not deleted


def test_more_seeds_train_only_the_new_students(finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  config = get_config(finished_root(finished))
  config.student.num_seeds += 1
  result = pipeline.run(config, workdir, progress=False,
                        log=lambda line: None)
  assert set(result.seconds) == {f"student/seed{config.student.num_seeds - 1}",
                                 "eval"}
  assert result.accuracies[:-1] == finished[1].accuracies


def test_a_student_seed_offset_trains_the_students_it_names(finished,
                                                            tmp_path):
  workdir = _copy(finished, tmp_path)
  config = get_config(finished_root(finished))
  config.student.seed = 1
  result = pipeline.run(config, workdir, progress=False,
                        log=lambda line: None)
  # seed1 is the first run's second student; only seed2 is new.
  assert set(result.seconds) == {"student/seed2", "eval"}
  assert result.accuracies[0] == finished[1].accuracies[1]


def test_eval_points_give_each_student_a_curve_ending_at_its_accuracy(
    finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  config = get_config(finished_root(finished))
  config.student.eval_points = 3  # 4 steps: at 2 and 4
  result = pipeline.run(config, workdir, progress=False,
                        log=lambda line: None)
  with open(os.path.join(workdir, "results.json")) as f:
    curves = json.load(f)["curves"]
  assert [[step for step, _ in c] for c in curves] == [[2, 4], [2, 4]]
  assert [c[-1][1] for c in curves] == list(result.accuracies)


def test_a_curve_on_a_subset_uses_as_many_images_of_every_class(data_root):
  test = splits.Splits(get_config(data_root)).source("test")
  subset = train_stage.curve_split(test, 3)
  assert np.bincount(subset.labels).tolist() == [1, 1, 1]
  assert train_stage.curve_split(test, 0) is test


def test_without_eval_points_a_student_keeps_its_digest(finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  config = get_config(finished_root(finished))
  config.student.eval_points = 0
  result = pipeline.run(config, workdir, progress=False,
                        log=lambda line: None)
  assert "student/seed0" in result.skipped
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["curves"] == [[], []]


def test_a_needed_stage_that_was_not_requested_is_reported(data_root,
                                                           tmp_path):
  with pytest.raises(ValueError, match="'encode' stage is needed"):
    pipeline.run(get_config(data_root), str(tmp_path), stages=("train",),
                 progress=False, log=lambda line: None)


def test_stages_stop_after_the_last_requested_one(data_root, tmp_path):
  result = pipeline.run(get_config(data_root), str(tmp_path),
                        stages=("encode", "quantize"), progress=False,
                        log=lambda line: None)
  assert set(result.seconds) == {"autoencoder", "latents", "quantization",
                                 "quantization_sweep"}
  assert not (tmp_path / "synthetic").exists()


@pytest.mark.parametrize("method", ["stream", "d4m"])
def test_the_quantize_stage_runs_every_method(data_root, tmp_path, method):
  config = get_config(data_root)
  config.quantize.method = method
  config.report.sweep_ks = ()
  pipeline.run(config, str(tmp_path), stages=("encode", "quantize"),
               progress=False, log=lambda line: None)
  with np.load(tmp_path / "quantization" / "quantization.npz") as q:
    counts, centroids = q["counts"], q["centroids"]
  with open(tmp_path / "latents" / "index.json") as f:
    sizes = json.load(f)["counts"]
  assert counts.sum(axis=1).tolist() == sizes
  assert centroids.shape[:2] == (len(sizes), config.ipc)


def test_unknown_stage_is_refused(data_root, tmp_path):
  with pytest.raises(ValueError, match=r"Unknown stages \['distill'\]"):
    pipeline.run(get_config(data_root), str(tmp_path), stages=("distill",))


@pytest.mark.parametrize("path,value,message", [
    ("ipc", 0, "config.ipc must be >= 1, got 0"),
    ("seed", -1, "config.seed must be >= 0, got -1"),
    ("baseline", "rand", "config.baseline must be one of"),
    ("quantize.method", "kmeans", r"'d4m', 'stream'\), got 'kmeans'"),
    ("student.weights", "mass", "config.student.weights must be one of"),
    ("student.batch_size", 0, "config.student.batch_size must be >= 1"),
    ("decode.strength", 1.5, r"config.decode.strength must be in \[0, 1\]"),
    ("student.temperature", 0.0, "config.student.temperature must be > 0"),
])
def test_a_bad_config_field_is_refused_before_any_work(data_root, tmp_path,
                                                        path, value, message):
  config = get_config(data_root)
  section, _, field = path.rpartition(".")
  (config[section] if section else config)[field] = value
  workdir = str(tmp_path / "run")
  with pytest.raises(ValueError, match=message):
    pipeline.run(config, workdir, progress=False, log=lambda line: None)
  assert not os.path.exists(workdir)


def test_a_workdir_that_is_a_file_is_refused(data_root, tmp_path):
  path = tmp_path / "file"
  path.write_text("")
  with pytest.raises(ValueError, match="exists and is not a directory"):
    pipeline.run(get_config(data_root), str(path), progress=False,
                 log=lambda line: None)


def _cli(*args, timeout=600):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "pqd_jax.main", *args],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=timeout)


def _killed_in(stage_dir, done_before, finished, workdir, args, sig):
  """Runs the CLI from the stages ``done_before`` and signals it as soon as
  ``stage_dir`` starts; whether the signal stopped it before its end."""
  # The stages before the kill are those of the uninterrupted run (the CLI
  # finds them cached), so the run starts right at the stage it is killed in.
  for name in done_before:
    shutil.copytree(os.path.join(finished[0], name),
                    os.path.join(workdir, name))
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  # SIGINT's default disposition, so that Python turns it into
  # KeyboardInterrupt even when the tests run in a background job of a
  # non-interactive shell (which starts its children with SIGINT ignored).
  proc = subprocess.Popen([sys.executable, "-m", "pqd_jax.main", *args],
                          cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL,
                          preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                           signal.SIG_DFL))
  pending = os.path.join(workdir, stage_dir, "pending.json")
  deadline = time.time() + 300
  # A short poll: the stage is seconds long.
  while not os.path.exists(pending) and proc.poll() is None:
    assert time.time() < deadline
    time.sleep(0.01)
  if proc.poll() is not None:
    # The poll missed the stage: too late if it ran, a failure if not.
    assert os.path.exists(os.path.join(workdir, stage_dir, "stage.json")), (
        f"the run ended before {stage_dir} was reached")
    return False
  proc.send_signal(sig)
  proc.wait()
  return not os.path.exists(os.path.join(workdir, "results.json"))


@pytest.mark.parametrize("sig,stage_dir,done_before", [
    # just after decode, in the teacher
    (signal.SIGKILL, "teacher", ("autoencoder", "latents", "quantization",
                                 "quantization_sweep", "prior", "synthetic")),
    # between the two students
    (signal.SIGINT, "student/seed1", ("autoencoder", "latents",
                                      "quantization", "quantization_sweep",
                                      "prior", "synthetic", "teacher",
                                      "student/seed0")),
])
def test_cli_killed_resumes_to_the_same_result(finished, tmp_path, sig,
                                               stage_dir, done_before):
  root = finished_root(finished)
  workdir = str(tmp_path / "run")
  args = [f"--dataset=folder:{root}", f"--config={CONFIG_FILE}:{root}",
          f"--workdir={workdir}"]
  # A loaded machine may deschedule the poll until the run has finished:
  # then the signal came too late and the run starts over.
  for _ in range(3):
    shutil.rmtree(workdir, ignore_errors=True)
    if _killed_in(stage_dir, done_before, finished, workdir, args, sig):
      break
  else:
    pytest.fail(f"the run finished before {stage_dir} could be signalled, "
                "three times")
  out = _cli(*args)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "student accuracy" in out.stdout
  assert f"{done_before[-1]} cached" in out.stdout
  with open(os.path.join(workdir, "results.json")) as f:
    resumed = json.load(f)
  assert resumed["accuracies"] == list(finished[1].accuracies)


def test_cli_bad_folder_is_one_line_error(tmp_path):
  out = _cli(f"--dataset=folder:{tmp_path}/missing", timeout=120)
  assert out.returncode != 0
  assert out.stderr.strip().splitlines()[-1].startswith("error: ")
  assert "no such directory" in out.stderr


def test_cli_unknown_dataset_is_one_line_error():
  out = _cli("--dataset=cifar100", timeout=120)
  assert out.returncode != 0
  assert out.stderr.strip().startswith("error: unknown --dataset")


def test_cli_unknown_config_field_is_one_line_error(finished):
  root = finished_root(finished)
  out = _cli(f"--dataset=folder:{root}", "--config.ipcs=3", timeout=120)
  assert out.returncode != 0
  assert "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines()[-1].startswith(
      "error: a --config.<field> flag names a field the config does not "
      "have: 'ipcs'")


def test_cli_bad_config_value_is_one_line_error(finished, tmp_path):
  root = finished_root(finished)
  out = _cli(f"--dataset=folder:{root}", "--config.quantize.method=kmeans",
             f"--workdir={tmp_path}/run", timeout=120)
  assert out.returncode != 0
  assert "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines()[-1].startswith(
      "error: config.quantize.method must be one of")


def test_random_baseline_needs_no_latent_space(data_root, tmp_path):
  config = get_config(data_root)
  config.baseline = "random"
  result = pipeline.run(config, str(tmp_path), progress=False,
                        log=lambda line: None)
  assert not (tmp_path / "autoencoder").exists()
  assert not (tmp_path / "prior").exists()
  _, labels, weights = synthetic.load_set(str(tmp_path / "synthetic"))
  np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])
  np.testing.assert_array_equal(weights, 1.0)
  assert len(result.accuracies) == 2


def test_a_deleted_results_file_is_written_again_from_the_eval_artefact(
    finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  os.remove(os.path.join(workdir, "results.json"))
  result = pipeline.run(get_config(finished_root(finished)), workdir,
                        progress=False, log=lambda line: None)
  assert result.seconds == {}
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["accuracies"] == list(finished[1].accuracies)


def test_a_truncated_synthetic_shard_is_made_again(finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  shard = os.path.join(workdir, "synthetic", "shards", "00001.npy")
  with open(shard, "rb") as f:
    data = f.read()
  with open(shard, "wb") as f:
    f.write(data[:len(data) // 2])
  result = pipeline.run(get_config(finished_root(finished)), workdir,
                        progress=False, log=lambda line: None)
  assert set(result.seconds) == {"synthetic"}  # the same set: students kept
  again = synthetic.load_set(os.path.join(workdir, "synthetic"))[0]
  original = synthetic.load_set(os.path.join(finished[0], "synthetic"))[0]
  np.testing.assert_array_equal(again[:], original[:])
  assert result.accuracies == finished[1].accuracies


def test_a_student_whose_last_checkpoint_is_lost_is_trained_again(
    finished, tmp_path):
  workdir = _copy(finished, tmp_path)
  ckpt = os.path.join(workdir, "student", "seed1", "ckpt")
  shutil.rmtree(os.path.join(ckpt, max(os.listdir(ckpt), key=int)))
  result = pipeline.run(get_config(finished_root(finished)), workdir,
                        progress=False, log=lambda line: None)
  assert set(result.seconds) == {"student/seed1"}
  assert result.accuracies == finished[1].accuracies


def test_a_killed_decode_resumes_at_its_first_unfinished_class(
    finished, tmp_path, monkeypatch):
  from pqd_jax.autoencoder import model as ae_lib
  from pqd_jax.stages import decode

  workdir = _copy(finished, tmp_path)
  syn = os.path.join(workdir, "synthetic")
  with open(os.path.join(syn, "stage.json")) as f:
    digest = json.load(f)["digest"]
  # What a kill while class 2 was decoded leaves behind.
  for name in ("stage.json", "set.npz", "grid.png",
               os.path.join("shards", "00002.npy")):
    os.remove(os.path.join(syn, name))
  with open(os.path.join(syn, "pending.json"), "w") as f:
    json.dump({"digest": digest}, f)
  kept = os.stat(os.path.join(syn, "shards", "00000.npy")).st_mtime_ns
  monkeypatch.setattr(decode, "GROUP_IMAGES", 2)  # one class per group
  decoded = []
  real_decode = ae_lib.decode
  monkeypatch.setattr(ae_lib, "decode", lambda ae, z, **kw: decoded.append(
      len(z)) or real_decode(ae, z, **kw))
  result = pipeline.run(get_config(finished_root(finished)), workdir,
                        progress=False, log=lambda line: None)
  assert set(result.seconds) == {"synthetic"}
  assert decoded == [2]  # class 2's two centroids, nothing else
  assert os.stat(os.path.join(syn, "shards", "00000.npy")).st_mtime_ns == kept
  again = synthetic.load_set(syn)[0]
  original = synthetic.load_set(os.path.join(finished[0], "synthetic"))[0]
  np.testing.assert_array_equal(again[:], original[:])
  assert result.accuracies == finished[1].accuracies


def test_a_test_split_with_other_classes_stops_the_run_before_any_stage(
    tmp_path):
  root = write_folder(str(tmp_path / "data"))
  shutil.rmtree(os.path.join(root, "test", "left"))
  with pytest.raises(ValueError, match=r"missing \['left'\]"):
    pipeline.run(get_config(root), str(tmp_path / "run"), progress=False,
                 log=lambda line: None)
  assert not os.path.exists(tmp_path / "run" / "autoencoder")


@pytest.mark.parametrize("baseline", ["", "random"])
def test_parameterised_storage_keeps_four_images_per_slot(data_root, tmp_path,
                                                          baseline):
  config = get_config(data_root)
  config.factor, config.baseline = 2, baseline
  config.report.sweep_ks = ()
  result = pipeline.run(config, str(tmp_path), progress=False,
                        log=lambda line: None)
  _, labels, weights = synthetic.load_set(str(tmp_path / "synthetic"))
  assert labels.tolist() == [0, 0, 1, 1, 2, 2]  # ipc 2 stored per class
  assert weights.shape == (6, 4)  # a weight per tile
  if not baseline:
    with np.load(tmp_path / "quantization" / "quantization.npz") as q:
      assert q["centroids"].shape[1] == 8  # ipc x 4 centroids
      np.testing.assert_allclose(weights.reshape(3, 8),
                                 q["weights"].reshape(3, 8))
  assert len(result.accuracies) == 2


def test_nearest_real_images_are_training_images_with_the_quantizers_weights(
    data_root, tmp_path):
  config = get_config(data_root)
  config.decode.images = "nearest"
  config.report.sweep_ks = ()
  pipeline.run(config, str(tmp_path), stages=("encode", "quantize",
                                              "decode"),
               progress=False, log=lambda line: None)
  assert not (tmp_path / "prior").exists()
  images, labels, weights = synthetic.load_set(str(tmp_path / "synthetic"))
  with np.load(tmp_path / "quantization" / "quantization.npz") as q:
    np.testing.assert_allclose(weights, q["weights"].reshape(-1))
  train = splits.Splits(config).source("train")
  real = {train.read([i])[0].tobytes() for i in range(len(train))}
  stored = synthetic.to_uint8(images.take(np.arange(len(labels))))
  assert all(img.tobytes() in real for img in stored)
