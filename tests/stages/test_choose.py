import jax
import jax.numpy as jnp
import numpy as np

from pqd_jax import models
from pqd_jax.data import pipeline as data_pipeline
from pqd_jax.stages import choose, relabel


def test_the_best_candidate_is_the_highest_score_and_ties_go_first():
  scores = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])
  np.testing.assert_array_equal(choose.best(scores), [1, 0])


def test_spread_scores_are_squared_distances_to_the_mean():
  z = np.random.default_rng(0).normal(size=(5, 2, 3))
  mean = np.random.default_rng(1).normal(size=(2, 3))
  expected = [np.sum((zi - mean) ** 2) for zi in z]
  np.testing.assert_allclose(choose.spread_scores(z, mean), expected)


def test_a_tile_is_scored_as_the_teacher_sees_it_upsampled():
  model = models.ConvNet(num_classes=3, width=8, depth=2)
  teacher = relabel.Classifier(
      model, model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1))))
  tiles = np.random.default_rng(0).integers(0, 256, (4, 4, 4, 1), np.uint8)
  labels = np.array([0, 1, 2, 0])
  upsampled = data_pipeline.resize_images(
      data_pipeline.to_unit_range(tiles), 8)
  np.testing.assert_allclose(
      choose.teacher_scores(teacher, tiles, labels, 8),
      choose.teacher_scores(teacher, upsampled, labels, 8), rtol=1e-6)
