"""The Voronoi-cell kernels against float64 numpy on one device.

The kernels reduce over a mesh axis, so they run inside ``shard_map`` on a
one-device mesh; four devices are covered through ``quantize`` in
``test_multidevice.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pqd_jax import sharding
from pqd_jax.quantization import cells, lloyd
from tests.conftest import on_one_device

AXIS = sharding.DATA_AXIS


def _cell_sums(x, cell, k):
  sums = np.zeros((k, x.shape[-1]))
  np.add.at(sums, cell[cell < k], x[cell < k].astype(np.float64))
  return sums


MOVED = [0, 3, 64, 65, 300]  # none, part of a block, one, one and one more


def _moved(n_moved):
  """Points, their new and previous cells, and ``moved_sums``' result."""
  gen = np.random.default_rng(n_moved)
  k, n_chunks, chunk, d = 7, 4, 100, 5
  x = gen.standard_normal((n_chunks, chunk, d)).astype(np.float32)
  previous = gen.integers(0, k, (n_chunks * chunk,)).astype(np.int32)
  previous[-9:] = k  # padding stays padding
  cell = previous.copy()
  moved = gen.choice(n_chunks * chunk - 9, n_moved, replace=False)
  cell[moved] = (previous[moved] + gen.integers(1, k, n_moved)) % k
  out = on_one_device(
      lambda x, c, p: cells.moved_sums(x, c, p, k, block=64, axis_name=AXIS),
      x, cell.reshape(n_chunks, chunk), previous.reshape(n_chunks, chunk))
  return x.reshape(-1, d), cell, previous, out


@pytest.mark.parametrize("n_moved", MOVED)
def test_moved_sums_is_the_change_of_the_cell_sums(n_moved):
  x, cell, previous, (delta, _) = _moved(n_moved)
  k = delta.shape[0]
  expected = _cell_sums(x, cell, k) - _cell_sums(x, previous, k)
  np.testing.assert_allclose(np.asarray(delta), expected, atol=1e-4)


@pytest.mark.parametrize("n_moved", MOVED)
def test_moved_sums_is_the_change_of_the_cell_counts(n_moved):
  _, cell, previous, (delta, moves) = _moved(n_moved)
  k = delta.shape[0]
  expected = (np.bincount(cell[cell < k], minlength=k)
              - np.bincount(previous[previous < k], minlength=k))
  np.testing.assert_array_equal(np.asarray(moves), expected)


@pytest.mark.parametrize("n", [1, 37, cells.COMPACT_WIDTH,
                               3 * cells.COMPACT_WIDTH + 17])
@pytest.mark.parametrize("density", [0.0, 0.1, 0.7, 1.0])
def test_compact_lists_the_true_entries_in_order(n, density):
  mask = np.random.default_rng(n).random(n) < density
  size = n + 3
  out = jax.jit(cells.compact, static_argnums=1)(mask, size)
  expected = np.zeros(size, np.int32)
  expected[:mask.sum()] = np.flatnonzero(mask)
  np.testing.assert_array_equal(np.asarray(out), expected)


# Centroid counts of each shape of the running minimum's loop (the
# ``[k, m]`` layout): one centroid (each step revisits it), steps that
# overlap, steps that tile ``k`` exactly, and more than two steps.
NEAREST_KS = [1, 5, 2 * cells.NEAREST_GROUP - 1, 2 * cells.NEAREST_GROUP,
              3 * cells.NEAREST_GROUP + 5]
# The loop at every k, and unrolled (loop=False) where it applies.
NEAREST_CASES = ([(k, True) for k in NEAREST_KS]
                 + [(k, False) for k in NEAREST_KS
                    if k < 2 * cells.NEAREST_GROUP])


def _nearest(products, c_sq, axis, loop=True, candidates=None):
  return jax.jit(cells.nearest, static_argnums=2, static_argnames="loop")(
      products, c_sq, axis, candidates=candidates, loop=loop)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("k,loop", NEAREST_CASES)
def test_nearest_is_the_minimum_and_its_index(k, loop, axis):
  gen = np.random.default_rng(k)
  prod = gen.standard_normal((k, 37) if axis == 0 else (37, k))
  c_sq = np.expand_dims(gen.uniform(0, 2, k), 1 - axis)
  dmin, first = _nearest(prod.astype(np.float32), c_sq.astype(np.float32),
                         axis, loop)
  dist = c_sq.astype(np.float32) - 2 * prod.astype(np.float32)
  np.testing.assert_array_equal(np.asarray(first), dist.argmin(axis))
  np.testing.assert_array_equal(np.asarray(dmin), dist.min(axis))


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("k,loop", [case for case in NEAREST_CASES
                                    if case[0] > 1])
def test_nearest_breaks_ties_to_the_first_centroid(k, loop, axis):
  # Every centroid ties with the one after it; the minimum sits at varied
  # places, the last pair included.
  gen = np.random.default_rng(k)
  prod = gen.integers(0, 3, (k, 41)).astype(np.float32)
  prod[1::2] = prod[:-1:2]
  prod[-2:, 0] = 10.0
  if axis:
    prod = np.ascontiguousarray(prod.T)
  _, first = _nearest(prod, np.zeros((1, 1), np.float32), axis, loop)
  np.testing.assert_array_equal(np.asarray(first), (-2 * prod).argmin(axis))


def test_nearest_refuses_norms_of_another_rank():
  # A [k] vector would broadcast along the points.
  with pytest.raises(ValueError, match=r"c_sq of shape \(3,\)"):
    cells.nearest(np.zeros((3, 3), np.float32), np.zeros(3, np.float32), 0)


def test_nearest_unrolls_only_a_few_centroids():
  k = 2 * cells.NEAREST_GROUP
  with pytest.raises(ValueError, match=f"got {k}"):
    _nearest(np.zeros((k, 3), np.float32), np.zeros((k, 1), np.float32), 0,
             False)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("k,loop", [case for case in NEAREST_CASES
                                    if case[0] > 1])
def test_nearest_takes_only_candidates(k, loop, axis):
  # Each point may take only the centroids marked (at least one).
  gen = np.random.default_rng(k)
  shape = (k, 29) if axis == 0 else (29, k)
  prod = gen.standard_normal(shape).astype(np.float32)
  allowed = gen.random(shape) < 0.3
  np.put_along_axis(allowed, np.expand_dims(gen.integers(0, k, 29), axis),
                    True, axis)
  dmin, first = _nearest(prod, np.zeros((1, 1), np.float32), axis, loop,
                         candidates=allowed)
  dist = np.where(allowed, -2 * prod, np.inf)
  np.testing.assert_array_equal(np.asarray(first), dist.argmin(axis))
  np.testing.assert_array_equal(np.asarray(dmin), dist.min(axis))


# A thin codebook (distances [points, k]) and a wide one ([k, points]).
LAYOUT_KS = [6, cells.POINTS_MAJOR_K + 8]


def _assign(k, seed=0):
  gen = np.random.default_rng(seed)
  x = gen.standard_normal((3, 50, 4)).astype(np.float32)
  mask = np.ones((3, 50), bool)
  mask[-1, -5:] = False
  c = gen.standard_normal((k, 4)).astype(np.float32)
  out = on_one_device(
      lambda x, m, c: cells.assign_cells(x, jnp.sum(x * x, -1), m, c,
                                         axis_name=AXIS), x, mask, c)
  return x, mask, c, out


@pytest.mark.parametrize("k", LAYOUT_KS)
def test_assign_cells_gives_each_point_its_nearest_centroid(k):
  x, mask, c, (stats, dist, cell) = _assign(k)
  d2 = ((x[..., None, :].astype(np.float64) - c) ** 2).sum(-1)
  expected = np.where(mask, d2.argmin(-1), k)
  np.testing.assert_array_equal(np.asarray(cell), expected)
  np.testing.assert_array_equal(np.asarray(stats.counts),
                                np.bincount(expected[mask], minlength=k))
  np.testing.assert_allclose(np.asarray(dist), np.where(mask, d2.min(-1), 0),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", LAYOUT_KS)
def test_assign_cells_sums_the_points_of_each_cell(k):
  x, _, _, (stats, _, cell) = _assign(k, seed=1)
  expected = _cell_sums(x.reshape(-1, 4), np.asarray(cell).reshape(-1), k)
  np.testing.assert_allclose(np.asarray(stats.sums), expected, atol=1e-5)


def _lloyd64(x, c, iters):
  """Plain float64 Lloyd (no empty cells on the data used here).

  Returns:
    The centroids after ``iters`` updates and the counts of their cells.
  """
  x = x.astype(np.float64)
  c = c.astype(np.float64)
  for update in range(iters + 1):
    nearest = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
    if update == iters:
      return c, np.bincount(nearest, minlength=len(c))
    c = np.stack([x[nearest == j].mean(0) for j in range(len(c))])


# Lloyd's passes on both layouts, unrolled and looped: a thin codebook
# ([points, k]), a wide one ([k, points]) of under 2 * NEAREST_GROUP, and
# one of more.
LLOYD_KS = [8, cells.POINTS_MAJOR_K + 8, 2 * cells.NEAREST_GROUP + 6]


def _lloyd_run(k):
  gen = np.random.default_rng(3)
  centers = gen.normal(0, 3, (k, 6))
  x = (centers[gen.integers(0, k, 2000)]
       + gen.standard_normal((2000, 6))).astype(np.float32)
  mask = np.ones(2000, bool)
  mask[-13:] = False  # padding rows: never counted
  c0 = x[:k].copy()
  out = on_one_device(
      lambda x, m, c0: lloyd.lloyd(
          c0, x.reshape(10, 200, 6), jnp.sum(x * x, -1).reshape(10, 200),
          m.reshape(10, 200), num_iters=12, tol=0.0, axis_name=AXIS),
      x, mask, c0)
  # ``centroids`` are those of the last assignment: passes - 1 updates.
  return out, _lloyd64(x[mask], c0, int(out.iterations) - 1)


@pytest.mark.parametrize("k", LLOYD_KS)
def test_lloyd_follows_float64_lloyd_pass_by_pass(k):
  # Many points change cell in the early passes (several blocks of moved
  # points) and few later: every pass's update must be the exact means.
  out, (expected, _) = _lloyd_run(k)
  np.testing.assert_allclose(np.asarray(out.centroids), expected,
                             rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", LLOYD_KS)
def test_lloyd_counts_the_cells_of_its_centroids(k):
  # The counts are updated from the moved points after the first pass.
  out, (_, counts) = _lloyd_run(k)
  np.testing.assert_array_equal(np.asarray(out.counts), counts)
