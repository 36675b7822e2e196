"""Seeding: k-means‖ and weighted greedy k-means++ on one device."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
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


def _greedy_plusplus_law(x, k, trials):
  """Exact probability of each ordered seed sequence of greedy k-means++.

  Each seed after a uniform first is the candidate, of ``trials`` drawn
  i.i.d. ∝ D², whose potential is lowest (the first drawn on a tie).
  """
  n = len(x)
  d2 = (x[:, None] - x[None]) ** 2

  def extend(seq, p, closest):
    if len(seq) == k:
      yield tuple(seq), p
      return
    draw = closest / closest.sum()
    pot = np.minimum(closest[None], d2).sum(1)  # [n] potential per candidate
    law = np.zeros(n)
    for cands in itertools.product(range(n), repeat=trials):
      chosen = min(cands, key=lambda c: (pot[c], cands.index(c)))
      law[chosen] += np.prod(draw[list(cands)])
    for c in np.flatnonzero(law):
      yield from extend(seq + [c], p * law[c], np.minimum(closest, d2[c]))

  law = {}
  for first in range(n):
    for seq, p in extend([first], 1.0 / n, d2[first]):
      law[seq] = law.get(seq, 0.0) + p
  return law


@pytest.mark.parametrize("pool_size", [2, 5, 12])
def test_pooled_kmeans_plusplus_draws_the_greedy_kmeans_plusplus_law(
    pool_size):
  # Uneven 1-D points: after a seed near 0, D² sends most draws to the far
  # pair, and a pool drawn once (without rejection) would put a second seed
  # there far more often than greedy k-means++ does.
  x = np.array([0.0, 0.3, 4.0, 4.5, 10.0, 10.2], np.float32)
  k, trials, runs = 3, 2, 4000
  law = _greedy_plusplus_law(x.astype(np.float64), k, trials)
  pts = jnp.asarray(x[:, None])
  seed = jax.jit(jax.vmap(lambda key: seeding.kmeans_plusplus(
      key, pts, pts[:, 0] ** 2, jnp.ones(len(x), bool), k,
      n_local_trials=trials, pool_size=pool_size, axis_name=None)))
  seeds = np.asarray(seed(jax.random.split(jax.random.key(0), runs)))
  index = np.abs(seeds[..., 0, None] - x).argmin(-1)  # [runs, k]
  seqs, counts = np.unique(index, axis=0, return_counts=True)
  observed = {tuple(s): c for s, c in zip(seqs, counts, strict=True)}
  assert set(observed) <= set(law)
  expected = np.array([law[s] * runs for s in law])
  got = np.array([observed.get(s, 0) for s in law])
  # Pearson's chi-square over the sequences expected at least 5 times.
  big = expected >= 5
  stat = np.sum((got[big] - expected[big]) ** 2 / expected[big])
  assert stats.chi2.sf(stat, big.sum() - 1) > 1e-3, stat


def test_kmeans_plusplus_returns_points_when_distances_overflow():
  # Squared distances of 1e20-scaled points are inf in float32: every draw
  # must still be accepted, each pass adding a seed.
  x = (1e20 * np.random.default_rng(0).standard_normal((50, 8))).astype(
      np.float32)
  seeds = np.asarray(seeding.kmeans_plusplus(
      jax.random.key(0), jnp.asarray(x), jnp.sum(jnp.asarray(x) ** 2, -1),
      jnp.ones(len(x), bool), 5, axis_name=None))
  assert (seeds[:, None] == x[None]).all(-1).any(1).all()
