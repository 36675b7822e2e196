"""Per-centroid weights from Voronoi-cell counts.

The weight of a synthetic image multiplies its per-sample loss. ``"mass"`` is
the cell mass (the W2-optimal weights on a fixed support, DDOQ), ``"sqrt"`` is
proportional to the square root of the cell count (a variance-reducing
variant) and ``"uniform"`` is D4M (all ones). Every scheme is normalised to
mean 1 within a class so that the loss scale matches the unweighted case.
"""

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["WEIGHT_SCHEMES", "cell_weights"]

WEIGHT_SCHEMES = ("mass", "sqrt", "uniform")


def cell_weights(counts: jnp.ndarray, scheme: str = "mass") -> jnp.ndarray:
  """Turns cell counts into per-centroid weights of mean 1 per class.

  Args:
    counts: ``[c, k]`` (or ``[k]``) number of points in each Voronoi cell.
    scheme: ``"mass"`` (w ∝ n_k), ``"sqrt"`` (w ∝ √n_k) or ``"uniform"``.

  Returns:
    ``[c, k]`` (or ``[k]``) float32 weights whose mean over the last axis is 1.
    A class with no points at all gets uniform weights.

  Raises:
    ValueError: for an unknown scheme, counts of rank 0, or (outside a
      trace) counts that are negative or not finite.
  """
  if scheme not in WEIGHT_SCHEMES:
    raise ValueError(
        f"Unknown weights scheme {scheme!r}; expected one of {WEIGHT_SCHEMES}."
    )
  if not isinstance(counts, jax.core.Tracer):
    host = np.asarray(counts, np.float64)
    if host.ndim < 1:
      raise ValueError(
          f"counts must have shape [c, k] or [k], got a scalar {counts!r}.")
    if not (np.isfinite(host).all() and (host >= 0).all()):
      raise ValueError(
          f"counts must be finite and >= 0, got {host.ravel()[:10].tolist()}"
          f"{' ...' if host.size > 10 else ''}.")
  counts = jnp.asarray(counts, jnp.float32)
  if scheme == "uniform":
    return jnp.ones_like(counts)
  raw = counts if scheme == "mass" else jnp.sqrt(counts)
  k = counts.shape[-1]
  total = jnp.sum(raw, axis=-1, keepdims=True)
  return jnp.where(total > 0, k * raw / jnp.where(total > 0, total, 1.0), 1.0)
