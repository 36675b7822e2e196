"""Per-sample losses and the weighted mean of the distilled set.

Every synthetic image carries a weight (its cell mass for DDOQ, 1 for D4M);
the batch loss is ``Σ w_i ℓ_i / Σ w_i``, so uniform weights give exactly the
unweighted mean. The KD loss is Hinton's ``T² · KL(p_teacher^T ‖
p_student^T)``: the T² keeps gradient magnitudes comparable across
temperatures.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pqd_jax import sharding

__all__ = [
    "ce_per_sample",
    "check_distilled_set",
    "kd_per_sample",
    "weighted_ce_loss",
    "weighted_kd_loss",
    "weighted_mean",
]


def kd_per_sample(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray,
                  temperature: float = 1.0) -> jnp.ndarray:
  """``[b]`` T² · KL(softmax(teacher/T) ‖ softmax(student/T))."""
  t = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
  s = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  return temperature ** 2 * jnp.sum(jnp.exp(t) * (t - s), axis=-1)


def ce_per_sample(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
  """``[b]`` cross-entropy with integer labels."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


def weighted_mean(per_sample: jnp.ndarray,
                  weights: jnp.ndarray | None = None) -> jnp.ndarray:
  """``Σ w ℓ / Σ w`` (the plain mean when ``weights`` is None).

  A batch whose weights are all zero (possible when a set has zero-weight
  images) has loss 0, so its gradient is zero instead of NaN.
  """
  if weights is None:
    return jnp.mean(per_sample)
  total = jnp.sum(weights)
  return jnp.sum(weights * per_sample) / jnp.where(total > 0, total, 1.0)


def weighted_kd_loss(student_logits, teacher_logits, weights=None,
                     temperature: float = 1.0) -> jnp.ndarray:
  """Weighted mean of :func:`kd_per_sample`."""
  return weighted_mean(
      kd_per_sample(student_logits, teacher_logits, temperature), weights)


def weighted_ce_loss(logits, labels, weights=None) -> jnp.ndarray:
  """Weighted mean of :func:`ce_per_sample`."""
  return weighted_mean(ce_per_sample(logits, labels), weights)


def check_distilled_set(images: Any, labels: Any, weights: Any,
                        num_classes: int, factor: int = 1) -> None:
  """Validates a distilled set before training (host side).

  ``images`` may be an array or anything with a ``shape`` whose rows are
  read later (a set on disk, stored as uint8 and so always finite). With
  parameterised storage (``factor > 1``, :mod:`pqd_jax.data.formation`)
  every stored image holds ``factor²`` tiles, weighted ``[n, factor²]``.

  Raises:
    ValueError: for an empty set, images that are not finite, mismatched
      lengths, labels outside ``[0, num_classes)``, or weights that are
      negative, NaN or all zero.
  """
  in_memory = not isinstance(images, sharding.LazyRows)
  images = np.asarray(images) if in_memory else images
  labels = np.asarray(labels)
  weights = np.asarray(weights, np.float64)
  if len(images.shape) != 4 or images.shape[0] == 0:
    raise ValueError(f"the distilled set must be [n >= 1, h, w, c] images, "
                     f"got shape {images.shape}.")
  if in_memory and not np.isfinite(images).all():
    rows = np.flatnonzero(~np.isfinite(images.reshape(len(images), -1)).all(1))
    raise ValueError(f"images must be finite; rows {rows[:5].tolist()} hold "
                     "NaN or Inf.")
  n = images.shape[0]
  weight_shape = (n,) if factor == 1 else (n, factor * factor)
  if labels.shape != (n,) or weights.shape != weight_shape:
    raise ValueError(f"labels {labels.shape} and weights {weights.shape} must "
                     f"have shapes ({n},) and {weight_shape}.")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be integers, got {labels.dtype}.")
  bad = (labels < 0) | (labels >= num_classes)
  if bad.any():
    raise ValueError(
        f"labels must be in [0, {num_classes}); got {labels[bad][:5].tolist()}"
        f" at rows {np.flatnonzero(bad)[:5].tolist()}.")
  if not np.isfinite(weights).all() or (weights < 0).any():
    rows = np.flatnonzero((~np.isfinite(weights) | (weights < 0)).reshape(
        n, -1).any(1))
    raise ValueError(
        f"weights must be finite and >= 0; rows {rows[:5].tolist()} hold "
        f"{weights[rows[:5]].tolist()}.")
  if weights.sum() <= 0:
    raise ValueError("weights are all zero; at least one must be positive.")
