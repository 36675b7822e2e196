"""CLVQ / mini-batch k-means on one class's data shard (D4M's quantizer).

Competitive Learning Vector Quantization with the step 1/count: for every
mini-batch, each point goes to its nearest centroid, and centroid ``j`` moves
to ``(c_j·N_j + Σ batch points in j) / (N_j + n_j)`` where ``N_j`` is the
number of points it has absorbed so far — scikit-learn's ``MiniBatchKMeans``
update and the online quantizer D4M runs. After the last epoch one exact pass
recounts the Voronoi cells of the final centroids, so weights and distortion
are exact (D4M's own counts are the running ones).

The sequence of mini-batches is drawn per device, so unlike Lloyd the result
depends on the number of devices (it is still deterministic for a seed and a
device count).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pqd_jax.quantization import cells
from pqd_jax.quantization import lloyd as lloyd_lib

__all__ = ["ClvqState", "Codebook", "absorb", "clvq"]


class Codebook(NamedTuple):
  """Centroids learnt online, with the step count of each.

  Also the state of the mini-batch loop of :func:`clvq`.

  Attributes:
    centroids: ``[..., k, d]`` float32 centroids (``[k, d]`` for one class,
      ``[c, k, d]`` for the stream quantizer's classes).
    absorbed: ``[..., k]`` int32 number of points each centroid has absorbed
      so far; its next step is ``1 / absorbed`` per point.
  """

  centroids: jnp.ndarray
  absorbed: jnp.ndarray


class ClvqState(NamedTuple):
  """The epoch ``while_loop`` state of :func:`clvq`.

  Attributes:
    codebook: ``[k, d]`` float32 centroids after the last epoch and the
      ``[k]`` int32 points each has absorbed so far.
    epoch: scalar int32 epochs run.
    converged: scalar bool, whether the last epoch moved the centroids by at
      most the tolerance.
  """

  codebook: Codebook
  epoch: jnp.ndarray
  converged: jnp.ndarray


def absorb(book: Codebook, sums: jnp.ndarray,
           counts: jnp.ndarray) -> Codebook:
  """One mini-batch k-means step (CLVQ with the step 1/count).

  Centroid ``j`` moves to ``(c_j·N_j + s_j) / (N_j + n_j)``, written as
  ``c_j + (s_j − n_j c_j) / (N_j + n_j)``, where the mini-batch put ``n_j``
  points of sum ``s_j`` in its cell and it had absorbed ``N_j`` before.

  Args:
    book: the centroids ``[..., k, d]`` and their ``absorbed`` ``[..., k]``.
    sums: ``[..., k, d]`` float32 sum of the mini-batch's points per cell.
    counts: ``[..., k]`` int32 number of the mini-batch's points per cell.

  Returns:
    The updated ``Codebook``; cells the mini-batch missed are unchanged.
  """
  absorbed = book.absorbed + counts
  n = counts.astype(jnp.float32)[..., None]
  rate = 1.0 / jnp.maximum(absorbed, 1).astype(jnp.float32)[..., None]
  return Codebook(book.centroids + (sums - n * book.centroids) * rate,
                  absorbed)


def clvq(
    key: jax.Array,
    c0: jnp.ndarray,
    x: jnp.ndarray,
    x_sq: jnp.ndarray,
    mask: jnp.ndarray,
    *,
    num_iters: int,
    tol: float,
    batch_size: int,
    axis_name: str,
) -> lloyd_lib.ClassQuantizer:
  """Mini-batch k-means on one class.

  Args:
    key: PRNG key of this class (mini-batch order), identical on every
      device.
    c0: ``[k, d]`` float32 seeds.
    x: ``[n_chunks, chunk, d]`` local points.
    x_sq: ``[n_chunks, chunk]`` float32 squared norms.
    mask: ``[n_chunks, chunk]`` bool.
    num_iters: maximum number of epochs (passes over the data, ≥ 1).
    tol: relative tolerance on the centroid shift over one epoch.
    batch_size: points per mini-batch *on each device*.
    axis_name: mesh axis.

  Returns:
    The class's ``ClassQuantizer``; ``iterations`` counts epochs.
  """
  d = x.shape[-1]
  flat_x, flat_sq, flat_mask = (
      x.reshape(-1, d), x_sq.reshape(-1), mask.reshape(-1)
  )
  n_local = flat_x.shape[0]
  batch = min(batch_size, n_local)
  steps = -(-n_local // batch)
  k = c0.shape[0]
  device_key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
  tol_abs = lloyd_lib.relative_tolerance(
      flat_x, flat_sq, flat_mask, tol, axis_name=axis_name
  )

  def minibatch(s, book: Codebook, order) -> Codebook:
    idx = jax.lax.dynamic_slice_in_dim(order, s * batch, batch)
    valid = idx < n_local
    idx = jnp.minimum(idx, n_local - 1)
    stats, _ = cells.assign_stats(
        flat_x[idx][None], flat_sq[idx][None], (flat_mask[idx] & valid)[None],
        book.centroids, axis_name=axis_name,
    )
    return absorb(book, stats.sums, stats.counts)

  def cond(state: ClvqState) -> jnp.ndarray:
    return (state.epoch < num_iters) & ~state.converged

  def epoch_body(state: ClvqState) -> ClvqState:
    order = jax.random.permutation(
        jax.random.fold_in(device_key, state.epoch), n_local)
    order = jnp.concatenate(
        [order, jnp.full((steps * batch - n_local,), n_local, order.dtype)]
    )
    book = jax.lax.fori_loop(
        0, steps, lambda s, book: minibatch(s, book, order), state.codebook)
    shift = jnp.sum((book.centroids - state.codebook.centroids) ** 2)
    return ClvqState(book, state.epoch + 1, shift <= tol_abs)

  state = ClvqState(
      codebook=Codebook(c0, jnp.zeros((k,), jnp.int32)),
      epoch=jnp.zeros((), jnp.int32), converged=jnp.zeros((), bool),
  )
  state = jax.lax.while_loop(cond, epoch_body, state)
  c = state.codebook.centroids
  final, _ = cells.assign_stats(x, x_sq, mask, c, axis_name=axis_name)
  n = jax.lax.psum(jnp.sum(flat_mask, dtype=jnp.int32), axis_name)
  return lloyd_lib.ClassQuantizer(c, final.counts, final.sse / n, state.epoch,
                                  state.converged)
