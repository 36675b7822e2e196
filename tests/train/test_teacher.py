"""train_teacher's batches read ahead (PrefetchedSteps): the same training."""

import shutil

import jax
import numpy as np
import pytest

from pqd_jax import models
from pqd_jax.data import pipeline, sources
from pqd_jax.train import loop, start, steps, teacher

AUG = (("flip", True), ("crop_scale", (0.6, 1.0)))


@pytest.fixture
def source():
  gen = np.random.default_rng(0)
  return sources.ArraySource(gen.integers(0, 256, (21, 8, 8, 1), np.uint8),
                             np.arange(21) % 3, ("a", "b", "c"))


def _model():
  return models.ConvNet(num_classes=3, width=8, depth=2)


def _lazy_teacher(source, workdir, num_steps, batch_size):
  """train_teacher as it was: lazy_batch rows read by the training step."""
  records = pipeline.record_dataset(source, seed=0)
  model = _model()
  tx, state, key = start.initial_state(
      model, (8, 8, 1), num_steps=num_steps, optimizer="adamw",
      learning_rate=2e-3, weight_decay=1e-4, warmup_steps=2, seed=0)
  return loop.fit(
      state, lambda s, b, k: steps.ce_step(s, b, k, model=model, tx=tx,
                                           aug=AUG),
      lambda s: pipeline.lazy_batch(records, s, batch_size, (8, 8, 1)),
      num_steps, workdir, rng=key, progress=False)


def _leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def test_shuffled_steps_are_the_batches_of_the_record_dataset(source):
  records = pipeline.record_dataset(source, seed=3)
  order = teacher.ShuffledSteps(len(source), 8, seed=3, start=2, stop=6)
  assert len(order) == 4
  got = list(pipeline.prefetch_batches(source, order))
  for k, batch in enumerate(got):  # steps 2 to 5 cross into a third epoch
    lazy = pipeline.lazy_batch(records, 2 + k, 8, (8, 8, 1))
    np.testing.assert_array_equal(
        pipeline.unit_rows([batch], source, (8, 8, 1))[:], lazy["image"][:])
    np.testing.assert_array_equal(batch.labels, lazy["label"][:])


def test_batches_are_those_of_the_lazy_batches_whatever_the_order(source):
  records = pipeline.record_dataset(source, seed=4)
  batch_fn = teacher.PrefetchedSteps(source, 8, 10, seed=4)
  try:
    for step in (0, 1, 2, 7, 8, 3):  # sequential, a jump, back
      got = batch_fn(step)
      want = pipeline.lazy_batch(records, step, 8, (8, 8, 1))
      np.testing.assert_array_equal(got["image"][:], want["image"][:])
      np.testing.assert_array_equal(got["label"], want["label"][:])
      np.testing.assert_array_equal(got["weight"], want["weight"])
    with pytest.raises(IndexError, match="step 10 is not below"):
      batch_fn(10)
  finally:
    batch_fn.close()


def test_training_is_unchanged_and_resumes(source, tmp_path):
  kwargs = dict(batch_size=8, warmup_steps=2, aug=AUG, progress=False)
  ref = _lazy_teacher(source, str(tmp_path / "ref"), 5, 8)
  run = tmp_path / "run"
  state = teacher.train_teacher(_model(), source, str(run), num_steps=5,
                                checkpoint_every=3, **kwargs)
  for a, b in zip(_leaves(ref), _leaves(state), strict=True):
    np.testing.assert_array_equal(a, b)
  # As if killed after the step-3 checkpoint: the run resumes there and its
  # read-ahead starts at step 3.
  shutil.rmtree(run / "ckpt" / "5")
  resumed = teacher.train_teacher(_model(), source, str(run), num_steps=5,
                                  checkpoint_every=3, **kwargs)
  for a, b in zip(_leaves(ref), _leaves(resumed), strict=True):
    np.testing.assert_array_equal(a, b)


def test_bad_read_ahead_settings_are_refused(source, tmp_path):
  with pytest.raises(ValueError, match="num_workers must be >= 0, got -2"):
    teacher.train_teacher(_model(), source, str(tmp_path), num_steps=1,
                          num_workers=-2, progress=False)
