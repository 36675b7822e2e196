"""predict_source: the classifiers' predictions on a split read ahead."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pqd_jax import models
from pqd_jax.data import pipeline, sources
from pqd_jax.train import evaluation, steps


@pytest.fixture
def source():
  gen = np.random.default_rng(0)
  return sources.ArraySource(gen.integers(0, 256, (23, 8, 8, 1), np.uint8),
                             np.arange(23) % 3, ("a", "b", "c"))


def _classifier(seed):
  model = models.ConvNet(num_classes=3, width=8, depth=2)
  return model, model.init(jax.random.key(seed), jnp.zeros((1, 8, 8, 1)))


@pytest.mark.parametrize("batch_size", [5, 1000])
def test_predictions_are_those_of_predict_on_the_whole_split(source,
                                                             batch_size):
  classifiers = [_classifier(1), _classifier(2)]
  x = pipeline.to_unit_range(source.read())
  got = evaluation.predict_source(classifiers, source, batch_size=batch_size)
  assert len(got) == 2
  for (model, variables), pred in zip(classifiers, got, strict=True):
    np.testing.assert_array_equal(
        pred, steps.predict(model, variables, x, batch_size))
  assert not np.array_equal(got[0], got[1])  # two different classifiers


def test_an_empty_source_is_refused():
  empty = sources.ArraySource(np.zeros((0, 8, 8, 1), np.uint8),
                              np.zeros(0, int), ("a",))
  with pytest.raises(ValueError, match="the source is empty"):
    evaluation.predict_source([_classifier(0)], empty)
