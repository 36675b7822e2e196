"""Lloyd iterations on one class's data shard, from seeds of ``seeding``.

Every function here works on the *local* shard of one class's points and
reduces across the mesh axis ``axis_name`` with ``psum``, so the same code runs
on one device and on a pod. Shapes use ``n`` for the local number of points
(padding included), ``d`` for the flattened latent size and ``k`` for the
number of centroids. Padding rows carry ``mask == False`` and never count.
The assignment kernel is :func:`pqd_jax.quantization.cells.assign_cells`;
after the first pass the cell sums and counts are updated from the points
that changed cell (:func:`pqd_jax.quantization.cells.moved_sums`), which
late passes make about half as costly as a full recount.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pqd_jax.quantization import cells

# Re-exported: the Lloyd quantizer's kernels keep their ``lloyd.X`` names.
from pqd_jax.quantization.cells import CellStats, assign_stats, chunk_points
from pqd_jax.quantization.seeding import (
    initial_centroids,
    kmeans_plusplus,
    random_init,
)

__all__ = [
    "CellStats",
    "ClassQuantizer",
    "LloydState",
    "assign_stats",
    "chunk_points",
    "initial_centroids",
    "kmeans_plusplus",
    "lloyd",
    "random_init",
    "relative_tolerance",
    "repair_empty",
]

# The cell sums and counts are updated from the moved points this many at
# a time: a block costs about as much whether it is full or not (the gathers
# and the one-hot matmul are sized by it), and blocks of 64 points were the
# fastest or close to it from 20 to 2,000 moved points and d = 196 to
# 16,384.
MOVED_BLOCK = 64


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


class LloydState(NamedTuple):
  """The ``while_loop`` state of :func:`lloyd`.

  Attributes:
    centroids: ``[k, d]`` float32 centroids for the next assignment pass.
    used: ``[k, d]`` float32 centroids the last assignment pass used (those
      that ``counts`` and ``sse`` are exact for).
    counts: ``[k]`` int32 cell counts of ``used``.
    sse: scalar float32 summed squared distance to ``used`` (``inf`` before
      the first pass).
    sums: ``[k, d]`` float32 cell sums of the assignment to ``used``.
    cell: ``[n_chunks, chunk]`` int32 local assignment to ``used`` (``k`` on
      padding).
    iteration: scalar int32 assignment passes run.
    converged: scalar bool, whether the tolerance was met.
  """

  centroids: jnp.ndarray
  used: jnp.ndarray
  counts: jnp.ndarray
  sse: jnp.ndarray
  sums: jnp.ndarray
  cell: jnp.ndarray
  iteration: jnp.ndarray
  converged: jnp.ndarray


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
  all_vals = cells.all_gather(vals, axis_name).reshape(-1)
  all_pts = cells.all_gather(
      flat_x[idx].astype(jnp.float32), axis_name
  ).reshape(-1, x.shape[-1])
  _, best = jax.lax.top_k(all_vals, min(k, all_vals.shape[0]))
  pts = all_pts[best]
  if pts.shape[0] < k:  # fewer candidates than seeds: repeat the last one.
    pts = jnp.concatenate(
        [pts, jnp.repeat(pts[-1:], k - pts.shape[0], axis=0)], axis=0
    )
  return pts


def repair_empty(x: jnp.ndarray, dist: jnp.ndarray, mask: jnp.ndarray,
                 new: jnp.ndarray, counts: jnp.ndarray, *,
                 axis_name: str) -> jnp.ndarray:
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


def lloyd(c0: jnp.ndarray, x: jnp.ndarray, x_sq: jnp.ndarray,
          mask: jnp.ndarray, *, num_iters: int, tol: float,
          axis_name: str) -> ClassQuantizer:
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

  def cond(state: LloydState) -> jnp.ndarray:
    return (state.iteration < num_iters) & ~state.converged

  def update(state: LloydState, stats: CellStats, dist: jnp.ndarray,
             cell: jnp.ndarray) -> LloydState:
    c, it = state.centroids, state.iteration
    occupied = stats.counts > 0
    safe = jnp.maximum(stats.counts, 1).astype(jnp.float32)[:, None]
    new = jnp.where(occupied[:, None], stats.sums / safe, c)
    new = repair_empty(x, dist, mask, new, stats.counts, axis_name=axis_name)
    settled = ((it > 0) & (state.sse - stats.sse <= tol * state.sse)) | (
        jnp.all(new == c))
    return LloydState(centroids=new, used=c, counts=stats.counts,
                      sse=stats.sse, sums=stats.sums, cell=cell,
                      iteration=it + 1,
                      converged=settled & jnp.all(occupied))

  def body(state: LloydState) -> LloydState:
    stats, dist, cell = cells.assign_cells(x, x_sq, mask, state.centroids,
                                           sums=False, counts=False,
                                           axis_name=axis_name)
    sums, counts = cells.moved_sums(x, cell, state.cell, k,
                                    block=MOVED_BLOCK, axis_name=axis_name)
    return update(state, stats._replace(sums=state.sums + sums,
                                        counts=state.counts + counts),
                  dist, cell)

  state = LloydState(
      centroids=c0, used=c0, counts=jnp.zeros((k,), jnp.int32),
      sse=jnp.full((), jnp.inf, jnp.float32), sums=None, cell=None,
      iteration=jnp.zeros((), jnp.int32), converged=jnp.zeros((), bool),
  )
  stats, dist, cell = cells.assign_cells(x, x_sq, mask, c0,
                                         axis_name=axis_name)
  state = jax.lax.while_loop(cond, body, update(state, stats, dist, cell))
  return ClassQuantizer(state.used, state.counts, state.sse / n,
                        state.iteration, state.converged)
