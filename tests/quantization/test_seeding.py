"""Seeding: k-means‖ and weighted greedy k-means++ on one device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans

import pqd_jax
from pqd_jax import sharding
from pqd_jax.quantization import seeding
from tests.conftest import labelled_blobs, on_one_device

AXIS = sharding.DATA_AXIS


def _separated_blobs(k, per_blob=40, d=3, seed=0):
  gen = np.random.default_rng(seed)
  centers = 100.0 * np.eye(k, d) if k <= d else gen.normal(0, 100, (k, d))
  x = centers.repeat(per_blob, 0) + gen.standard_normal((k * per_blob, d))
  return x.astype(np.float32), centers


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_parallel_puts_one_seed_in_each_separated_blob(seed):
  x, centers = _separated_blobs(8, d=6)
  seeds = on_one_device(
      lambda x: seeding.kmeans_parallel(
          jax.random.key(seed), x, jnp.sum(x * x, -1),
          jnp.ones(x.shape[0], bool), 8, chunk=40, axis_name=AXIS), x)
  nearest = ((np.asarray(seeds)[:, None] - centers) ** 2).sum(-1).argmin(1)
  assert sorted(nearest) == list(range(8))


def test_weighted_kmeans_plusplus_never_draws_a_weightless_point():
  x, _ = _separated_blobs(6, d=6)
  weights = np.zeros(len(x), np.float32)
  weights[::7] = 1.0
  seeds = on_one_device(
      lambda x, w: seeding.kmeans_plusplus(
          jax.random.key(0), x, jnp.sum(x * x, -1),
          jnp.ones(x.shape[0], bool), 6, weights=w, axis_name=AXIS),
      x, weights)
  drawn = (np.asarray(seeds)[:, None] == x[None]).all(-1)  # [6, n]
  assert (drawn & (weights > 0)).any(1).all()


def test_lloyd_from_kmeans_parallel_matches_scikit_learn_distortion():
  x, y = labelled_blobs((400, 300), dim=5)
  out = pqd_jax.quantize(x, y, 6, init="kmeans||", n_init=3,
                         rng=jax.random.key(1))
  for i, c in enumerate(np.asarray(out.classes)):
    xc = x[y == c]
    ref = KMeans(6, n_init=3, random_state=0).fit(xc).inertia_ / len(xc)
    assert float(out.distortion[i]) <= 1.02 * ref
