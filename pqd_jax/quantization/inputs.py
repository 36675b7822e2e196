"""Checks of the latents and labels handed to the quantizers.

:func:`pqd_jax.quantize`, :func:`pqd_jax.quantize_stream` and
:func:`pqd_jax.barycenter` take latents ``[n, *latent_shape]`` and integer
labels ``[n]`` from the user; these checks turn bad input into a
``ValueError`` that names it, before anything is compiled.
"""

import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from pqd_jax import sharding

__all__ = [
    "COMPUTE_DTYPES",
    "check_labels",
    "check_latents",
    "check_values",
    "compute_dtype",
]

# Latent dtypes quantized as they are; any other float is cast to float32.
COMPUTE_DTYPES = (np.float32, jnp.bfloat16, np.float16)


def check_latents(latents: Any, *, keep_lazy: bool = False,
                  values: bool = True) -> Any:
  """Validates latents and returns them as a host array ``[n, ...]``.

  With ``keep_lazy``, :class:`~pqd_jax.sharding.LazyRows` are returned
  unread (their rows are checked for NaN/Inf as they are read); otherwise
  they are read into memory. With ``values=False`` the values are not
  checked (:func:`check_values`): for a caller that checks them on the
  device.

  Raises:
    ValueError: if they are empty, of rank < 2, not floating point or hold
      NaN/Inf.
  """
  lazy = keep_lazy and isinstance(latents, sharding.LazyRows)
  try:
    arr = (latents if isinstance(latents, np.ndarray) or lazy
           else np.asarray(latents))
  except (TypeError, ValueError) as e:
    raise ValueError(
        f"latents must be an array [n, *latent_shape], got an object that "
        f"numpy cannot read as one ({e}).") from None
  if arr.ndim < 2:
    raise ValueError(
        "latents must have shape [n, *latent_shape] (rank >= 2), got shape "
        f"{arr.shape}."
    )
  if arr.shape[0] == 0 or math.prod(arr.shape) == 0:
    raise ValueError(f"latents is empty (shape {arr.shape}).")
  if not jnp.issubdtype(arr.dtype, jnp.floating):
    raise ValueError(
        "latents must be floating point (float32, bfloat16 or float16), got "
        f"dtype {arr.dtype}."
    )
  if values and not lazy:  # lazy rows are checked as quantize() reads them
    check_values(arr, 0)
  return arr


def check_values(rows: np.ndarray, first: int) -> None:
  """Rows ``[b, ...]`` must be finite in float32 (``first`` numbers them).

  Their size does not matter otherwise: the quantizers work in each class's
  frame and refuse only a spread whose distortion overflows float32
  (:func:`pqd_jax.quantization.frame.check_spread`).
  """
  flat = rows.reshape(rows.shape[0], -1)
  finite = np.isfinite(flat).all(axis=1)
  if not finite.all():
    bad = np.flatnonzero(~finite) + first
    raise ValueError(
        f"latents contain NaN or Inf in {bad.size} rows (first rows: "
        f"{bad[:5].tolist()})."
    )
  if flat.dtype.itemsize > 4 and flat.size:
    # max and -min instead of abs(): no copy of a large array.
    largest = max(float(flat.max()), -float(flat.min()))
    if largest > float(np.finfo(np.float32).max):
      raise ValueError(
          f"latents hold values up to {largest:.3g} in absolute value, "
          "beyond float32's range (3.4e38) in which they are quantized. "
          "Rescale the latents.")


def check_labels(labels: Any, n: int) -> np.ndarray:
  """Validates integer labels of length ``n`` and returns them on the host.

  Raises:
    ValueError: if they are not a 1-D integer array of length ``n``.
  """
  lab = np.asarray(labels)
  if lab.ndim != 1:
    raise ValueError(f"labels must be 1-D, got shape {lab.shape}.")
  if not jnp.issubdtype(lab.dtype, jnp.integer):
    raise ValueError(f"labels must be integers, got dtype {lab.dtype}.")
  if lab.shape[0] != n:
    raise ValueError(
        f"labels has length {lab.shape[0]} but latents has {n} rows; they "
        "must match."
    )
  return lab


def compute_dtype(dtype: Any) -> Any:
  """The dtype latents of ``dtype`` are quantized in (see COMPUTE_DTYPES)."""
  return dtype if dtype in COMPUTE_DTYPES else np.float32
