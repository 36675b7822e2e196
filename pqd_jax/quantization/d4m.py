"""D4M's quantizer: scikit-learn's MiniBatchKMeans as D4M calls it.

D4M (``distillation/gen_prototype.py``) builds, per class,
``MiniBatchKMeans(n_clusters=k, batch_size=k, random_state=0)`` and calls
``partial_fit`` once on each consecutive buffer of ``k`` latents of the
class, in one pass; the buffer of fewer than ``k`` left at the end is
dropped. :func:`d4m` is that procedure on one class's data shard:

1. the first ``k`` points are the centroids (k-means++ choosing ``k`` of
   ``k`` distinct points takes them all; only their order is random);
2. every batch of ``k`` points, the first included, is assigned to its
   nearest centroids, and centroid ``j`` moves to ``(c_j N_j + Σ x) / (N_j +
   n_j)`` (:func:`pqd_jax.quantization.clvq.absorb`);
3. on the first batch and every tenth after it, centroids whose count is
   below ``reassignment_ratio`` times the largest are moved to points of the
   batch drawn without replacement (at most half a batch of them), and their
   counts set to the smallest remaining count — scikit-learn's rule; its
   draws come from ``key`` rather than numpy's ``RandomState``.

Up to the order of the centroids and the reassignment draws, the centroids
are scikit-learn's. As for the other methods, an exact pass then recounts
the cells of the final centroids (D4M keeps no weights).
"""

import jax
import jax.numpy as jnp

from pqd_jax.quantization import cells
from pqd_jax.quantization import clvq as clvq_lib
from pqd_jax.quantization import lloyd as lloyd_lib

__all__ = ["REASSIGN_EVERY", "d4m"]

# scikit-learn checks for reassignment every 10 * n_clusters points, i.e.
# every tenth batch of n_clusters.
REASSIGN_EVERY = 10


def _batch(x: jnp.ndarray, b: jnp.ndarray, k: int, *,
           axis_name: str) -> jnp.ndarray:
  """``[k, d]`` float32 points ``b·k … b·k + k − 1`` of the class.

  Row ``r`` of the class sits on device ``r // n_local`` (the layout of
  :func:`pqd_jax.quantize`); each device contributes the rows it holds.
  """
  n_local = x.shape[0]
  me = jax.lax.axis_index(axis_name)
  local = b * k + jnp.arange(k) - me * n_local
  mine = (local >= 0) & (local < n_local)
  rows = x[jnp.clip(local, 0, n_local - 1)].astype(jnp.float32)
  return jax.lax.psum(jnp.where(mine[:, None], rows, 0.0), axis_name)


def _reassign(key: jax.Array, book: clvq_lib.Codebook, batch: jnp.ndarray,
              ratio: float) -> clvq_lib.Codebook:
  """scikit-learn's reassignment of low-count centroids to batch points."""
  k = batch.shape[0]
  counts = book.absorbed
  low = counts < ratio * jnp.max(counts)
  # At most int(0.5 * batch) of them: those of the smallest counts.
  rank = jnp.argsort(jnp.argsort(counts, stable=True), stable=True)
  low &= rank < int(0.5 * k)
  picks = jax.random.permutation(key, k)
  new = batch[picks[jnp.cumsum(low) - 1]]
  floor = jnp.min(jnp.where(low, jnp.iinfo(jnp.int32).max, counts))
  return clvq_lib.Codebook(jnp.where(low[:, None], new, book.centroids),
                           jnp.where(low, floor, counts))


def d4m(
    key: jax.Array,
    x: jnp.ndarray,
    x_sq: jnp.ndarray,
    mask: jnp.ndarray,
    k: int,
    *,
    reassignment_ratio: float = 0.01,
    axis_name: str,
) -> lloyd_lib.ClassQuantizer:
  """D4M's one-pass MiniBatchKMeans (batch = ``k``) on one class.

  Args:
    key: PRNG key of this class (the reassignment draws), identical on
      every device.
    x: ``[n_chunks, chunk, d]`` local points, the class's rows in order
      along the devices.
    x_sq: ``[n_chunks, chunk]`` float32 squared norms.
    mask: ``[n_chunks, chunk]`` bool, False on padding (the class's rows
      are its first ``n`` global rows).
    k: centroids, also the batch size.
    reassignment_ratio: scikit-learn's ``reassignment_ratio``.
    axis_name: mesh axis.

  Returns:
    The class's ``ClassQuantizer``; ``iterations`` counts the batches
    (``⌊n / k⌋``), and ``converged`` is True (one pass is the method).
  """
  d = x.shape[-1]
  flat = x.reshape(-1, d)
  n = jax.lax.psum(jnp.sum(mask, dtype=jnp.int32), axis_name)
  num_batches = n // k
  first = _batch(flat, jnp.zeros((), jnp.int32), k, axis_name=axis_name)

  def step(b, book: clvq_lib.Codebook) -> clvq_lib.Codebook:
    batch = _batch(flat, b, k, axis_name=axis_name)
    c_sq = jnp.sum(book.centroids * book.centroids, axis=-1)
    _, label = cells.nearest(batch @ book.centroids.T, c_sq[None, :], axis=1)
    one_hot = jax.nn.one_hot(label, k, dtype=jnp.float32)  # [k points, k]
    book = clvq_lib.absorb(book, one_hot.T @ batch,
                           jnp.sum(one_hot, axis=0).astype(jnp.int32))
    return jax.lax.cond(
        b % REASSIGN_EVERY == 0,
        lambda book: _reassign(jax.random.fold_in(key, b), book, batch,
                               reassignment_ratio),
        lambda book: book, book)

  book = jax.lax.fori_loop(0, num_batches, step,
                           clvq_lib.Codebook(first, jnp.zeros((k,), jnp.int32)))
  final, _ = cells.assign_stats(x, x_sq, mask, book.centroids,
                                axis_name=axis_name)
  return lloyd_lib.ClassQuantizer(book.centroids, final.counts,
                                  final.sse / n, num_batches,
                                  jnp.ones((), bool))
