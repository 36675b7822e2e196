"""method="d4m" is scikit-learn's MiniBatchKMeans as D4M calls it.

The oracle is scikit-learn itself: ``MiniBatchKMeans(n_clusters=k,
batch_size=k)`` fed by ``partial_fit`` on each consecutive block of ``k``
points of a class, the tail of fewer than ``k`` dropped (D4M's
``gen_prototype.py``).
"""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import MiniBatchKMeans

import pqd_jax
from pqd_jax.quantization import metrics


def _sklearn_d4m(points, k, **kwargs):
  km = MiniBatchKMeans(n_clusters=k, batch_size=k, random_state=0,
                       n_init="auto", **kwargs)
  for s in range(0, len(points) - k + 1, k):
    km.partial_fit(points[s:s + k])
  return km.cluster_centers_


def _matched(ours, theirs):
  """``theirs`` reordered to ``ours`` (the seeds' order is random)."""
  cost = ((ours[:, None] - theirs[None]) ** 2).sum(-1)
  _, cols = linear_sum_assignment(cost)
  return theirs[cols]


def _blobs(per_class, k, d=6, seed=0):
  # Well-separated, equally likely cells: no centroid's count falls below
  # 1% of the largest, so scikit-learn never reassigns at random.
  gen = np.random.default_rng(seed)
  centres = gen.normal(0, 10, (k, d))
  which = gen.integers(0, k, per_class)
  return (centres[which] + gen.normal(0, 1, (per_class, d))).astype(
      np.float32)


@pytest.mark.parametrize("k, n", [(3, 90), (5, 203), (10, 400)])
def test_centroids_are_sklearn_partial_fit(k, n):
  x = _blobs(n, k)
  out = pqd_jax.quantize(x, np.zeros(n, int), k, method="d4m")
  ours = np.asarray(out.centroids[0])
  np.testing.assert_allclose(ours, _matched(ours, _sklearn_d4m(x, k)),
                             rtol=1e-4, atol=1e-4)


def test_classes_are_fed_their_own_points_in_order():
  k = 4
  a, b = _blobs(60, k, seed=1), _blobs(45, k, seed=2) + 100
  x = np.concatenate([a[:30], b[:20], a[30:], b[20:]])
  y = np.repeat([0, 1, 0, 1], [30, 20, 30, 25])
  out = pqd_jax.quantize(x, y, k, method="d4m")
  for i, points in enumerate((a, b)):
    ours = np.asarray(out.centroids[i])
    np.testing.assert_allclose(ours, _matched(ours, _sklearn_d4m(points, k)),
                               rtol=1e-4, atol=1e-4)


def test_counts_and_distortion_are_an_exact_recount():
  x = _blobs(203, 5)
  out = pqd_jax.quantize(x, np.zeros(203, int), 5, method="d4m")
  cents = np.asarray(out.centroids[0])
  np.testing.assert_array_equal(np.asarray(out.counts[0]),
                                metrics.cell_counts(x, cents))
  np.testing.assert_allclose(float(out.distortion[0]),
                             metrics.distortion(x, cents), rtol=1e-5)


def test_a_starved_centroid_is_reassigned_to_a_batch_point():
  # The first batch holds a far outlier: its centroid absorbs nothing more,
  # falls below 1% of the largest count, and is moved on the tenth batch,
  # as scikit-learn moves it.
  k = 3
  x = _blobs(600, 2, seed=3)
  x[2] = 1e3
  out = pqd_jax.quantize(x, np.zeros(600, int), k, method="d4m")
  ours = np.asarray(out.centroids[0])
  assert np.abs(ours).max() < 100
  assert np.asarray(out.counts[0]).min() > 0


def test_n_init_does_not_apply():
  with pytest.raises(ValueError, match="n_init=3 does not apply to "
                     "method='d4m'"):
    pqd_jax.quantize(np.zeros((10, 2), np.float32), np.zeros(10, int), 2,
                     method="d4m", n_init=3)
