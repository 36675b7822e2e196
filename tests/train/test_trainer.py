import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pqd_jax import models
from pqd_jax.train import steps, trainer
from tests.train.test_steps import _setup as _steps_setup

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def tiny_set(n=12):
  images = np.asarray(jax.random.normal(jax.random.key(1), (n, 8, 8, 1)))
  return images, np.arange(n) % 3, np.linspace(0.5, 1.5, n)


def tiny_teacher():
  teacher = models.ConvNet(num_classes=3, width=8, depth=2)
  return teacher, teacher.init(jax.random.key(99), jnp.zeros((1, 8, 8, 1)))


def run(workdir, num_steps, checkpoint_every, progress=False):
  teacher, tvars = tiny_teacher()
  images, labels, weights = tiny_set()
  return trainer.train_student(
      models.ConvNet(num_classes=3, width=8, depth=2), images, labels,
      weights, workdir, num_classes=3, num_steps=num_steps, batch_size=6,
      teacher=teacher, teacher_variables=tvars,
      checkpoint_every=checkpoint_every, progress=progress)


def _same(a, b):
  return all(np.array_equal(x, y) for x, y in zip(
      jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True))


_KILLED = textwrap.dedent("""
    import sys
    from tests.train.test_trainer import run
    run(sys.argv[1], num_steps=400, checkpoint_every=2)
""")


def test_killed_student_training_resumes_to_the_same_parameters(tmp_path):
  killed = str(tmp_path / "killed")
  proc = subprocess.Popen([sys.executable, "-c", _KILLED, killed],
                          env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT)
  ckpt = os.path.join(killed, "ckpt")
  deadline = time.time() + 300
  while time.time() < deadline:
    if os.path.isdir(ckpt) and len([d for d in os.listdir(ckpt)
                                    if d.isdigit()]) >= 2:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, "run ended before the kill"
  resumed = run(killed, num_steps=400, checkpoint_every=2)
  straight = run(str(tmp_path / "one"), num_steps=400, checkpoint_every=400)
  assert int(resumed.step) == int(straight.step) == 400
  assert _same(resumed, straight)


def test_metrics_are_logged(tmp_path):
  run(str(tmp_path), num_steps=100, checkpoint_every=100)
  rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert len(rows) == 2  # every 50 steps


def test_evaluation_runs_on_its_own_schedule(tmp_path):
  student, _, _, tx, state, batch = _steps_setup()
  calls = []
  trainer.fit(
      state, lambda st, b, k: steps.ce_step(st, b, k, model=student, tx=tx,
                                            aug=(("flip", False),)),
      lambda step: batch, 21, str(tmp_path), rng=jax.random.key(0),
      log_every=50, eval_every=7, progress=False,
      eval_fn=lambda st: calls.append(int(st.step)) or {"acc": 0.0})
  assert calls == [7, 14, 21]


def test_distilled_batches_are_a_function_of_the_step():
  images, labels, weights = tiny_set()
  batches = trainer.distilled_batches(images, labels, weights, 5, seed=3)
  np.testing.assert_array_equal(batches(7)["label"], batches(7)["label"])
  assert len(batches(0)["label"]) == 5


def test_a_filled_batch_holds_every_image_as_often_as_it_can():
  images, labels, weights = tiny_set()
  n = len(images)
  batches = trainer.distilled_batches(images, labels, weights, 2 * n + 1,
                                      seed=3, fill=True)
  seen = np.bincount(
      [int(np.flatnonzero((images == img).all(axis=(1, 2, 3)))[0])
       for img in batches(4)["image"]], minlength=n)
  assert sorted(seen) == [2] * (n - 1) + [3]


def test_fill_does_not_change_a_batch_the_set_can_hold():
  images, labels, weights = tiny_set()
  plain = trainer.distilled_batches(images, labels, weights, 5, seed=3)
  filled = trainer.distilled_batches(images, labels, weights, 5, seed=3,
                                     fill=True)
  np.testing.assert_array_equal(plain(2)["image"], filled(2)["image"])


def test_a_filled_batch_is_the_batch_size_not_the_set_size(tmp_path):
  images, labels, weights = tiny_set()
  n = len(images)
  kwargs = dict(num_classes=3, num_steps=1, batch_size=2 * n,
                grad_accumulation=2 * n, progress=False)
  model = models.ConvNet(num_classes=3, width=8, depth=2)
  # 2n micro-batches split a batch of 2n views, not a set of n images.
  with pytest.raises(ValueError, match="does not divide the 12"):
    trainer.train_student(model, images, labels, weights,
                          str(tmp_path / "capped"), **kwargs)
  state = trainer.train_student(model, images, labels, weights,
                                str(tmp_path / "filled"), fill_batch=True,
                                **kwargs)
  assert int(state.step) == 1


def test_bad_weights_are_refused(tmp_path):
  images, labels, weights = tiny_set()
  weights[0] = -1.0
  with pytest.raises(ValueError, match="weights must be finite and >= 0"):
    trainer.train_student(models.ConvNet(num_classes=3, width=8), images,
                          labels, weights, str(tmp_path), num_classes=3,
                          num_steps=2)


def test_teacher_without_variables_is_refused(tmp_path):
  images, labels, weights = tiny_set()
  teacher, _ = tiny_teacher()
  with pytest.raises(ValueError, match="teacher_variables are required"):
    trainer.train_student(models.ConvNet(num_classes=3, width=8), images,
                          labels, weights, str(tmp_path), num_classes=3,
                          num_steps=2, teacher=teacher)


@pytest.mark.parametrize("kwargs,message", [
    ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ({"seed": -1}, "seed must be >= 0, got -1"),
])
def test_bad_batch_size_or_seed_is_refused(tmp_path, kwargs, message):
  images, labels, weights = tiny_set()
  with pytest.raises(ValueError, match=message):
    trainer.train_student(models.ConvNet(num_classes=3, width=8), images,
                          labels, weights, str(tmp_path), num_classes=3,
                          num_steps=2, **kwargs)


def test_state_step_counts_the_steps(tmp_path):
  state = run(str(tmp_path), num_steps=5, checkpoint_every=5)
  assert isinstance(state, steps.TrainState) and int(state.step) == 5


def test_teacher_learns_a_separable_task(tmp_path):
  from pqd_jax.data import pipeline, sources
  gen = np.random.default_rng(0)
  labels = np.arange(48) % 2
  images = np.where(labels[:, None, None, None] == 1, 200, 40)
  images = (images + gen.integers(0, 30, (48, 8, 8, 1))).astype(np.uint8)
  src = sources.ArraySource(images, labels, ("dark", "bright"))
  model = models.ConvNet(num_classes=2, width=8, depth=2)
  test_x = pipeline.to_unit_range(images)
  eval_fn = lambda s: {"test_accuracy": steps.accuracy(model, s, test_x,
                                                       labels)}
  state = trainer.train_teacher(model, src, str(tmp_path), num_steps=40,
                                batch_size=16, warmup_steps=5,
                                eval_fn=eval_fn, progress=False)
  assert steps.accuracy(model, state, test_x, labels) == 1.0
  assert "test_accuracy" in (tmp_path / "metrics.jsonl").read_text()


def test_random_subset_takes_ipc_per_class():
  labels = np.repeat([0, 1, 2], [5, 7, 4])
  idx = trainer.random_subset(labels, 3, seed=0)
  assert np.bincount(labels[idx]).tolist() == [3, 3, 3]
  np.testing.assert_array_equal(idx, trainer.random_subset(labels, 3, 0))


def test_random_subset_ipc_too_large():
  with pytest.raises(ValueError, match="class 2 has 4 images, fewer than "
                     "ipc=5"):
    trainer.random_subset(np.repeat([0, 1, 2], [5, 7, 4]), 5, seed=0)


def test_random_subset_ipc_below_one():
  with pytest.raises(ValueError, match="ipc must be >= 1, got 0"):
    trainer.random_subset(np.repeat([0, 1], 3), 0, seed=0)


def test_mean_std():
  assert trainer.mean_std([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2)))
  assert trainer.mean_std([4.0]) == (4.0, 0.0)


def test_restore_variables_loads_the_trained_parameters(tmp_path):
  state = run(str(tmp_path), num_steps=4, checkpoint_every=2)
  model = models.ConvNet(num_classes=3, width=8, depth=2)
  variables = trainer.restore_variables(model, str(tmp_path), (8, 8, 1))
  for x, y in zip(jax.tree.leaves(variables),
                  jax.tree.leaves(trainer.variables_of(state)), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_restore_variables_of_an_earlier_step(tmp_path):
  run(str(tmp_path), num_steps=4, checkpoint_every=2)
  model = models.ConvNet(num_classes=3, width=8, depth=2)
  early = trainer.restore_variables(model, str(tmp_path), (8, 8, 1), step=2)
  late = trainer.restore_variables(model, str(tmp_path), (8, 8, 1))
  assert not _same(steps.TrainState(0, early["params"], {}, None),
                   steps.TrainState(0, late["params"], {}, None))


def test_restore_variables_refuses_another_model(tmp_path):
  run(str(tmp_path), num_steps=2, checkpoint_every=2)
  wider = models.ConvNet(num_classes=3, width=16, depth=2)
  with pytest.raises(ValueError, match="does not match ConvNet"):
    trainer.restore_variables(wider, str(tmp_path), (8, 8, 1))


def test_restore_variables_without_checkpoints(tmp_path):
  model = models.ConvNet(num_classes=3, width=8, depth=2)
  with pytest.raises(ValueError, match="No checkpoints in"):
    trainer.restore_variables(model, str(tmp_path), (8, 8, 1))


def test_restore_variables_of_a_missing_step(tmp_path):
  run(str(tmp_path), num_steps=2, checkpoint_every=2)
  model = models.ConvNet(num_classes=3, width=8, depth=2)
  with pytest.raises(ValueError, match=r"step 7 .*available steps: \[2\]"):
    trainer.restore_variables(model, str(tmp_path), (8, 8, 1), step=7)


def _cut_checkpoint(workdir, step):
  """Cuts the metadata of a checkpoint, as a copy that stopped short would."""
  path = os.path.join(workdir, "ckpt", str(step), "default", "_METADATA")
  os.truncate(path, os.path.getsize(path) // 2)
  return re.escape(os.path.join(os.path.abspath(workdir), "ckpt", str(step)))


def test_restore_variables_of_a_damaged_checkpoint_names_it(tmp_path):
  run(str(tmp_path), num_steps=4, checkpoint_every=2)
  step = _cut_checkpoint(str(tmp_path), 4)
  model = models.ConvNet(num_classes=3, width=8, depth=2)
  with pytest.raises(ValueError, match=rf"cannot read {step}: "
                     r"JSONDecodeError.*; restore another step \(available: "
                     r"\[2\]\) or train again$"):
    trainer.restore_variables(model, str(tmp_path), (8, 8, 1))


def test_resuming_from_a_damaged_checkpoint_names_it(tmp_path):
  run(str(tmp_path), num_steps=2, checkpoint_every=2)
  step = _cut_checkpoint(str(tmp_path), 2)
  with pytest.raises(ValueError, match=rf"cannot read {step}: .*; delete it "
                     "to resume from the checkpoint before it, or delete "
                     f"{re.escape(str(tmp_path))} to train again$"):
    run(str(tmp_path), num_steps=4, checkpoint_every=2)


def test_a_truncated_run_config_names_it(tmp_path):
  trainer.check_run_config(str(tmp_path), {"a": 1, "b": [1, 2, 3]})
  path = tmp_path / "config.json"
  os.truncate(path, os.path.getsize(path) // 2)
  with pytest.raises(ValueError, match=rf"cannot read {re.escape(str(path))}"
                     r": JSONDecodeError.*; delete "
                     f"{re.escape(str(tmp_path))} and run again"):
    trainer.check_run_config(str(tmp_path), {"a": 1, "b": [1, 2, 3]})


def test_unknown_augmentation_is_refused_before_training(tmp_path):
  images, labels, weights = tiny_set()
  with pytest.raises(ValueError, match="'jitter'"):
    trainer.train_student(
        models.ConvNet(num_classes=3, width=8, depth=2), images, labels,
        weights, str(tmp_path), num_classes=3, num_steps=2,
        aug=(("jitter", True),))


def test_steps_from_epochs_rounds_up_partial_batches():
  assert trainer.steps_from_epochs(None, 3, 250, 100) == 9
  assert trainer.steps_from_epochs(None, 2, 10, 100) == 2  # batch capped at n
  assert trainer.steps_from_epochs(40, None, 250, 100) == 40


@pytest.mark.parametrize("num_steps,num_epochs", [(None, None), (10, 2)])
def test_steps_or_epochs_exactly_one(num_steps, num_epochs):
  with pytest.raises(ValueError, match="exactly one of num_steps"):
    trainer.steps_from_epochs(num_steps, num_epochs, 100, 10)


def test_student_trains_for_epochs(tmp_path):
  images, labels, weights = tiny_set()
  state = trainer.train_student(
      models.ConvNet(num_classes=3, width=8, depth=2), images, labels,
      weights, str(tmp_path), num_classes=3, num_epochs=3, batch_size=5,
      progress=False)
  assert int(state.step) == 9  # ceil(12 / 5) = 3 steps per epoch


def test_a_student_trains_on_the_tiles_of_mosaics(tmp_path):
  # 6 stored 16x16 mosaics of 4 tiles each, a weight per tile: the steps
  # take 3 stored images (12 tiles) each and fit.
  teacher = models.ConvNet(num_classes=3, width=8, depth=2)
  tvars = teacher.init(jax.random.key(99), jnp.zeros((1, 16, 16, 1)))
  images = np.asarray(jax.random.normal(jax.random.key(1), (6, 16, 16, 1)))
  state = trainer.train_student(
      models.ConvNet(num_classes=3, width=8, depth=2), images,
      np.arange(6) % 3, np.ones((6, 4)), str(tmp_path), num_classes=3,
      num_steps=3, batch_size=3, teacher=teacher, teacher_variables=tvars,
      factor=2, progress=False)
  assert int(state.step) == 3


def test_mosaic_weights_need_one_per_tile(tmp_path):
  images, labels, weights = tiny_set()
  with pytest.raises(ValueError, match=r"weights \(12,\) must have shapes "
                     r"\(12,\) and \(12, 4\)"):
    trainer.train_student(models.ConvNet(num_classes=3, width=8), images,
                          labels, weights, str(tmp_path), num_classes=3,
                          num_steps=2, factor=2)
