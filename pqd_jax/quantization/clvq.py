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

import jax
import jax.numpy as jnp

from pqd_jax.quantization import lloyd as lloyd_lib

__all__ = ["clvq"]


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

  def minibatch(s, carry, order):
    c, absorbed = carry
    idx = jax.lax.dynamic_slice_in_dim(order, s * batch, batch)
    valid = idx < n_local
    idx = jnp.minimum(idx, n_local - 1)
    stats, _ = lloyd_lib.assign_stats(
        flat_x[idx][None], flat_sq[idx][None], (flat_mask[idx] & valid)[None],
        c, axis_name=axis_name,
    )
    absorbed = absorbed + stats.counts
    n_b = stats.counts.astype(jnp.float32)[:, None]
    rate = 1.0 / jnp.maximum(absorbed, 1).astype(jnp.float32)[:, None]
    c = c + (stats.sums - n_b * c) * rate
    return c, absorbed

  def cond(state):
    _, _, epoch, converged = state
    return (epoch < num_iters) & ~converged

  def epoch_body(state):
    c, absorbed, epoch, _ = state
    order = jax.random.permutation(jax.random.fold_in(device_key, epoch),
                                   n_local)
    order = jnp.concatenate(
        [order, jnp.full((steps * batch - n_local,), n_local, order.dtype)]
    )
    new, absorbed = jax.lax.fori_loop(
        0, steps, lambda s, carry: minibatch(s, carry, order), (c, absorbed)
    )
    converged = jnp.sum((new - c) ** 2) <= tol_abs
    return new, absorbed, epoch + 1, converged

  state = (c0, jnp.zeros((k,), jnp.int32), jnp.zeros((), jnp.int32),
           jnp.zeros((), bool))
  c, _, epochs, converged = jax.lax.while_loop(cond, epoch_body, state)
  final, _ = lloyd_lib.assign_stats(x, x_sq, mask, c, axis_name=axis_name)
  n = jax.lax.psum(jnp.sum(flat_mask, dtype=jnp.int32), axis_name)
  return lloyd_lib.ClassQuantizer(c, final.counts, final.sse / n, epochs,
                                  converged)
