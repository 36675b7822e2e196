"""Lloyd iterations with greedy k-means++ seeds, on one class's data shard.

Every function here works on the *local* shard of one class's points and
reduces across the mesh axis ``axis_name`` with ``psum``, so the same code runs
on one device and on a pod. Shapes use ``n`` for the local number of points
(padding included), ``d`` for the flattened latent size and ``k`` for the
number of centroids. Padding rows carry ``mask == False`` and never count.

Assignments use ``‖x‖² − 2 x·c + ‖c‖²`` with the distances laid out as
``[k, chunk]`` (XLA's CPU dot is fastest with the long axis last) and a
two-reduction first-index argmin (``min``, then the smallest index attaining
it), which XLA compiles far better than its variadic ``argmin``. The cell sums
are a one-hot matmul, not a scatter: on CPU the scatter of ``segment_sum`` is
3–6× slower.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "CellStats",
    "ClassQuantizer",
    "assign_stats",
    "chunk_points",
    "initial_centroids",
    "kmeans_plusplus",
    "lloyd",
    "random_init",
    "relative_tolerance",
    "repair_empty",
]


class CellStats(NamedTuple):
  """Sufficient statistics of a Voronoi partition, summed over all devices.

  Attributes:
    sums: ``[k, d]`` float32 sum of the points in each cell.
    counts: ``[k]`` int32 number of points in each cell.
    sse: scalar float32 sum of squared distances to the nearest centroid.
  """

  sums: jnp.ndarray
  counts: jnp.ndarray
  sse: jnp.ndarray


class ClassQuantizer(NamedTuple):
  """The quantizer of one class.

  Attributes:
    centroids: ``[k, d]`` float32 centroids.
    counts: ``[k]`` int32 cell counts of exactly these centroids.
    distortion: scalar mean squared distance to the nearest centroid.
    iterations: scalar int32 number of assignment passes (Lloyd) or epochs
      (CLVQ) that ran.
    converged: scalar bool, whether the tolerance was met.
  """

  centroids: jnp.ndarray
  counts: jnp.ndarray
  distortion: jnp.ndarray
  iterations: jnp.ndarray
  converged: jnp.ndarray


def chunk_points(x: jnp.ndarray, chunk: int) -> jnp.ndarray:
  """Reshapes ``[n, ...]`` into ``[n // chunk, chunk, ...]``."""
  return x.reshape((x.shape[0] // chunk, chunk) + x.shape[1:])


def _nearest(c, c_sq, xc, valid):
  """Nearest centroid of each point of a chunk.

  Args:
    c: ``[k, d]`` float32 centroids.
    c_sq: ``[k]`` their squared norms.
    xc: ``[m, d]`` points (any float dtype).
    valid: ``[m]`` bool mask.

  Returns:
    ``(one_hot [k, m] bool, dmin [m])`` where ``dmin`` is the squared distance
    to the nearest centroid minus ``‖x‖²`` (add it back for the distance).
  """
  k = c.shape[0]
  dist = c_sq[:, None] - 2.0 * (c @ xc.astype(jnp.float32).T)  # [k, m]
  dmin = jnp.min(dist, axis=0)
  iota = jax.lax.broadcasted_iota(jnp.int32, dist.shape, 0)
  first = jnp.min(jnp.where(dist == dmin[None, :], iota, k), axis=0)
  one_hot = (iota == first[None, :]) & valid[None, :]
  return one_hot, dmin


def assign_stats(
    x: jnp.ndarray,
    x_sq: jnp.ndarray,
    mask: jnp.ndarray,
    centroids: jnp.ndarray,
    *,
    axis_name: str,
) -> tuple[CellStats, jnp.ndarray]:
  """Assigns every point to its nearest centroid and sums the cells.

  Memory is O(chunk·k): the chunks are visited by ``lax.scan``.

  Args:
    x: ``[n_chunks, chunk, d]`` local points.
    x_sq: ``[n_chunks, chunk]`` float32 squared norms of ``x``.
    mask: ``[n_chunks, chunk]`` bool, False on padding.
    centroids: ``[k, d]`` float32.
    axis_name: mesh axis to sum over.

  Returns:
    ``(stats, dist)``: the global ``CellStats`` and this device's
    ``[n_chunks, chunk]`` squared distance of each point to its nearest
    centroid (0 on padding).
  """
  k, d = centroids.shape
  c_sq = jnp.sum(centroids * centroids, axis=-1)

  def body(carry, chunk):
    sums, counts, sse = carry
    xc, xc_sq, valid = chunk
    one_hot, dmin = _nearest(centroids, c_sq, xc, valid)
    sums = sums + one_hot.astype(jnp.float32) @ xc.astype(jnp.float32)
    counts = counts + jnp.sum(one_hot, axis=1, dtype=jnp.int32)
    dist = jnp.where(valid, jnp.maximum(dmin + xc_sq, 0.0), 0.0)
    sse = sse + jnp.sum(dist)
    return (sums, counts, sse), dist

  init = jax.lax.pcast((
      jnp.zeros((k, d), jnp.float32),
      jnp.zeros((k,), jnp.int32),
      jnp.zeros((), jnp.float32),
  ), axis_name, to="varying")
  if x.shape[0] == 1:  # one chunk: no loop (a length-1 scan costs copies)
    (sums, counts, sse), dist = body(init, (x[0], x_sq[0], mask[0]))
    dist = dist[None]
  else:
    (sums, counts, sse), dist = jax.lax.scan(body, init, (x, x_sq, mask))
  return CellStats(*jax.lax.psum((sums, counts, sse), axis_name)), dist


def _all_gather(value, axis_name):
  """``[devices, *value.shape]``: every device's ``value``, the same on all.

  A ``psum`` of one-hot placed copies, so the result is typed as replicated
  (``all_gather`` results count as device-varying). Only for small arrays.
  """
  devices = jax.lax.psum(1, axis_name)
  me = jax.lax.axis_index(axis_name)
  placed = jnp.zeros((devices,) + value.shape, value.dtype).at[me].set(value)
  return jax.lax.psum(placed, axis_name)


def _sample_points(key, x, weight, num, *, axis_name):
  """Draws ``num`` points with probability ∝ ``weight`` across all devices.

  Every device draws the same uniforms; the device whose slice of the global
  cumulative sum holds a draw contributes the point, the others zeros, and a
  ``psum`` hands the points to everyone. With one device or many, the same
  uniforms select the same global point (up to float rounding of the sums).

  Args:
    key: PRNG key, identical on every device.
    x: ``[n, d]`` local points.
    weight: ``[n]`` non-negative local weights (0 on padding).
    num: number of draws.
    axis_name: mesh axis.

  Returns:
    ``[num, d]`` float32 points, identical on every device.
  """
  n = x.shape[0]
  local_total = jnp.sum(weight)
  totals = _all_gather(local_total, axis_name)  # [devices]
  me = jax.lax.axis_index(axis_name)
  ends = jnp.cumsum(totals)
  dev_ids = jnp.arange(totals.shape[0])
  last_dev = jnp.max(jnp.where(totals > 0, dev_ids, 0))
  u = jax.random.uniform(key, (num,)) * ends[-1]
  owner = jnp.minimum(jnp.searchsorted(ends, u, side="right"), last_dev)
  offset = ends[me] - local_total
  cum = jnp.cumsum(weight) + offset
  last_valid = jnp.max(jnp.where(weight > 0, jnp.arange(n), 0))
  j = jnp.minimum(jnp.searchsorted(cum, u, side="right"), last_valid)
  mine = (owner == me)[:, None]
  picked = jnp.where(mine, x[j].astype(jnp.float32), 0.0)
  return jax.lax.psum(picked, axis_name)


def _sq_dist_to(points, x, x_sq):
  """Squared distances ``[m, n]`` from ``points [m, d]`` to ``x [n, d]``.

  For the few points of a k-means++ step, ``x @ points.T`` runs up to 3×
  faster on CPU than ``points @ x.T`` (measured at D=1024, N=6000).
  """
  p_sq = jnp.sum(points * points, axis=-1)
  dots = (x.astype(jnp.float32) @ points.T).T
  return jnp.maximum(p_sq[:, None] - 2.0 * dots + x_sq[None, :], 0.0)


def kmeans_plusplus(
    key: jax.Array,
    x: jnp.ndarray,
    x_sq: jnp.ndarray,
    mask: jnp.ndarray,
    k: int,
    *,
    n_local_trials: int | None = None,
    axis_name: str,
) -> jnp.ndarray:
  """Greedy k-means++ seeds (Arthur & Vassilvitskii; the scikit-learn variant).

  The first seed is a uniformly drawn point. Each further seed is the best of
  ``n_local_trials`` candidates drawn with probability ∝ D², the one that
  lowers the total potential most.

  Args:
    key: PRNG key, identical on every device.
    x: ``[n, d]`` local points.
    x_sq: ``[n]`` float32 squared norms.
    mask: ``[n]`` bool, False on padding.
    k: number of seeds.
    n_local_trials: candidates per seed; default ``2 + ⌊ln k⌋`` as
      scikit-learn.
    axis_name: mesh axis.

  Returns:
    ``[k, d]`` float32 seeds, identical on every device.
  """
  if n_local_trials is None:
    n_local_trials = 2 + int(math.log(k))
  maskf = mask.astype(jnp.float32)
  first_key, loop_key = jax.random.split(key)
  first = _sample_points(first_key, x, maskf, 1, axis_name=axis_name)
  closest = _sq_dist_to(first, x, x_sq)[0] * maskf  # [n]
  seeds = jnp.zeros((k, x.shape[1]), jnp.float32).at[0].set(first[0])

  def body(i, carry):
    seeds, closest = carry
    cands = _sample_points(
        jax.random.fold_in(loop_key, i), x, closest, n_local_trials,
        axis_name=axis_name,
    )
    new = jnp.minimum(closest[None, :], _sq_dist_to(cands, x, x_sq)) * maskf
    potentials = jax.lax.psum(jnp.sum(new, axis=1), axis_name)
    best = jnp.argmin(potentials)
    return seeds.at[i].set(cands[best]), new[best]

  seeds, _ = jax.lax.fori_loop(1, k, body, (seeds, closest))
  return seeds


def random_init(
    key: jax.Array,
    x: jnp.ndarray,
    x_sq: jnp.ndarray,
    mask: jnp.ndarray,
    k: int,
    *,
    axis_name: str,
) -> jnp.ndarray:
  """``k`` distinct points drawn uniformly without replacement as seeds.

  Args:
    key: PRNG key, identical on every device.
    x: ``[n, d]`` local points.
    x_sq: ``[n]`` float32 squared norms.
    mask: ``[n]`` bool, False on padding.
    k: number of seeds.
    axis_name: mesh axis.

  Returns:
    ``[k, d]`` float32 seeds.
  """
  maskf = mask.astype(jnp.float32)

  def body(i, carry):
    seeds, avail = carry
    p = _sample_points(jax.random.fold_in(key, i), x, avail, 1,
                       axis_name=axis_name)
    # Remove the drawn point (distance 0 to it) from the pool.
    taken = _sq_dist_to(p, x, x_sq)[0]
    return seeds.at[i].set(p[0]), jnp.where(taken == 0.0, 0.0, avail)

  seeds = jnp.zeros((k, x.shape[1]), jnp.float32)
  seeds, _ = jax.lax.fori_loop(0, k, body, (seeds, maskf))
  return seeds


def initial_centroids(
    key: jax.Array,
    x: jnp.ndarray,
    x_sq: jnp.ndarray,
    mask: jnp.ndarray,
    k: int,
    *,
    init: str,
    n_local_trials: int | None,
    axis_name: str,
) -> jnp.ndarray:
  """Seeds by name: ``"kmeans++"`` (greedy) or ``"random"`` (distinct points).

  Args and returns as :func:`kmeans_plusplus`.
  """
  if init == "kmeans++":
    return kmeans_plusplus(key, x, x_sq, mask, k,
                           n_local_trials=n_local_trials, axis_name=axis_name)
  return random_init(key, x, x_sq, mask, k, axis_name=axis_name)


def relative_tolerance(
    x: jnp.ndarray, x_sq: jnp.ndarray, mask: jnp.ndarray, tol: float, *,
    axis_name: str,
) -> jnp.ndarray:
  """scikit-learn's tolerance: ``tol`` times the mean per-dimension variance.

  Args:
    x: ``[n, d]`` local points.
    x_sq: ``[n]`` squared norms.
    mask: ``[n]`` bool.
    tol: relative tolerance.
    axis_name: mesh axis.

  Returns:
    Scalar absolute tolerance on the summed squared centroid shift.
  """
  maskf = mask.astype(jnp.float32)
  n = jax.lax.psum(jnp.sum(maskf), axis_name)
  s = jax.lax.psum(maskf @ x.astype(jnp.float32), axis_name)
  s2 = jax.lax.psum(jnp.sum(x_sq * maskf), axis_name)
  mean = s / n
  var = jnp.maximum(s2 / n - jnp.sum(mean * mean), 0.0) / x.shape[-1]
  return tol * var


def _farthest_points(x, dist, mask, k, *, axis_name):
  """The ``k`` points farthest from their nearest centroid, over all devices.

  Args:
    x: ``[n_chunks, chunk, d]`` local points.
    dist: ``[n_chunks, chunk]`` squared distance to the nearest centroid.
    mask: ``[n_chunks, chunk]`` bool.
    k: number of points wanted.
    axis_name: mesh axis.

  Returns:
    ``[k, d]`` float32 points, farthest first.
  """
  flat_x = x.reshape(-1, x.shape[-1])
  dmin = jnp.where(mask.reshape(-1), dist.reshape(-1), -jnp.inf)
  kk = min(k, dmin.shape[0])
  vals, idx = jax.lax.top_k(dmin, kk)
  all_vals = _all_gather(vals, axis_name).reshape(-1)
  all_pts = _all_gather(
      flat_x[idx].astype(jnp.float32), axis_name
  ).reshape(-1, x.shape[-1])
  _, best = jax.lax.top_k(all_vals, min(k, all_vals.shape[0]))
  pts = all_pts[best]
  if pts.shape[0] < k:  # fewer candidates than seeds: repeat the last one.
    pts = jnp.concatenate(
        [pts, jnp.repeat(pts[-1:], k - pts.shape[0], axis=0)], axis=0
    )
  return pts


def repair_empty(x, dist, mask, new, counts, *, axis_name):
  """Moves centroids of empty cells onto the farthest points (scikit-learn).

  Args:
    x: ``[n_chunks, chunk, d]`` local points.
    dist: ``[n_chunks, chunk]`` squared distance of each point to its nearest
      centroid under the assignment that produced ``counts``.
    mask: ``[n_chunks, chunk]``.
    new: ``[k, d]`` updated centroids.
    counts: ``[k]`` cell counts.
    axis_name: mesh axis.

  Returns:
    ``[k, d]`` centroids with every empty cell re-seeded on a distinct point.
  """
  empty = counts == 0

  def fix(new):
    far = _farthest_points(x, dist, mask, new.shape[0], axis_name=axis_name)
    rank = jnp.cumsum(empty) - 1
    return jnp.where(empty[:, None], far[jnp.maximum(rank, 0)], new)

  return jax.lax.cond(jnp.any(empty), fix, lambda new: new, new)


def lloyd(
    c0: jnp.ndarray,
    x: jnp.ndarray,
    x_sq: jnp.ndarray,
    mask: jnp.ndarray,
    *,
    num_iters: int,
    tol: float,
    axis_name: str,
) -> ClassQuantizer:
  """Lloyd's algorithm on one class, stopping on scikit-learn's tolerance.

  Stops once an assignment pass lowers the distortion by at most ``tol``
  relative to the previous pass (faiss's rule) or leaves every centroid in
  place, with no cell empty; or after ``num_iters`` passes. The returned
  centroids are the ones the last assignment used, so counts and distortion
  are exact for them.

  Args:
    c0: ``[k, d]`` float32 seeds (e.g. from :func:`initial_centroids`).
    x: ``[n_chunks, chunk, d]`` local points.
    x_sq: ``[n_chunks, chunk]`` float32 squared norms.
    mask: ``[n_chunks, chunk]`` bool.
    num_iters: maximum number of assignment passes (≥ 1).
    tol: relative tolerance.
    axis_name: mesh axis.

  Returns:
    The class's ``ClassQuantizer``.
  """
  k, _ = c0.shape
  n = jax.lax.psum(jnp.sum(mask, dtype=jnp.int32), axis_name)

  def cond(state):
    _, _, _, _, it, converged = state
    return (it < num_iters) & ~converged

  def body(state):
    c, _, _, prev_sse, it, _ = state
    stats, dist = assign_stats(x, x_sq, mask, c, axis_name=axis_name)
    occupied = stats.counts > 0
    safe = jnp.maximum(stats.counts, 1).astype(jnp.float32)[:, None]
    new = jnp.where(occupied[:, None], stats.sums / safe, c)
    new = repair_empty(x, dist, mask, new, stats.counts, axis_name=axis_name)
    settled = ((it > 0) & (prev_sse - stats.sse <= tol * prev_sse)) | jnp.all(
        new == c)
    converged = settled & jnp.all(occupied)
    return new, c, stats.counts, stats.sse, it + 1, converged

  state = (
      c0, c0, jnp.zeros((k,), jnp.int32), jnp.full((), jnp.inf, jnp.float32),
      jnp.zeros((), jnp.int32), jnp.zeros((), bool),
  )
  _, used, counts, sse, it, converged = jax.lax.while_loop(cond, body, state)
  return ClassQuantizer(used, counts, sse / n, it, converged)
