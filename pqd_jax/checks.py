"""Argument checks shared by the public functions.

Each check raises a ``ValueError`` that names the argument, the value it got
and what was expected, so that bad input fails before it reaches JAX.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.typing import DTypeLike

__all__ = ["COMPUTE_DTYPES", "choice", "compute_dtype", "integer", "number",
           "prng_key", "mesh"]

# What the VAE and the Stable Diffusion UNet may compute in ("auto":
# bfloat16 on a TPU backend, float32 elsewhere).
COMPUTE_DTYPES = ("auto", "float32", "bfloat16", "float16")


def choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
  """``value`` if it is one of the strings ``choices``."""
  if not isinstance(value, str) or value not in choices:
    raise ValueError(f"Unknown {name} {value!r}; expected one of {choices}.")
  return value


def compute_dtype(value: DTypeLike, name: str = "compute dtype"
                  ) -> jnp.dtype:
  """The dtype a compute-dtype setting resolves to on this backend.

  Args:
    value: one of :data:`COMPUTE_DTYPES`, or a dtype (``jnp.bfloat16``,
      ``np.float32``, ...) of one of them. ``"auto"`` is bfloat16 when
      ``jax.default_backend()`` is ``"tpu"`` and float32 otherwise.
    name: what ``value`` is called in the message (e.g.
      ``"config.compute_dtype"``).

  Returns:
    float32, bfloat16 or float16 as a ``jnp.dtype``.

  Raises:
    ValueError: for an unknown name, a dtype that is not a compute dtype
      here (float64, integers) or float16 on a TPU backend.
  """
  key = value
  if not isinstance(value, str) and value is not None:
    try:
      key = np.dtype(value).name
    except (TypeError, ValueError):
      pass
  if key not in COMPUTE_DTYPES:
    raise ValueError(
        f"{name} must be one of {COMPUTE_DTYPES} (the VAE and the Stable "
        f"Diffusion UNet compute in float32, bfloat16 or float16), got "
        f"{value!r}.")
  backend = jax.default_backend()
  if key == "auto":
    key = "bfloat16" if backend == "tpu" else "float32"
  if key == "float16" and backend == "tpu":
    raise ValueError(
        f"{name} 'float16' is not available on the TPU backend (TPUs compute "
        "in bfloat16): use 'bfloat16' or 'auto'.")
  return jnp.dtype(key)


def integer(name: str, value: Any, minimum: int = 1,
            maximum: int | None = None) -> int:
  """``value`` as an ``int`` if it is an integer in ``[minimum, maximum]``."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name} must be an integer, got {value!r}.")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}.")
  if maximum is not None and value > maximum:
    raise ValueError(f"{name} must be <= {maximum}, got {value}.")
  return int(value)


def number(name: str, value: Any, *, minimum: float | None = None,
           positive: bool = False) -> float:
  """``value`` as a ``float`` if it is a finite real number in range.

  Args:
    name: the argument's name, for the message.
    value: a Python or numpy real number (not a bool).
    minimum: the smallest value allowed, if any.
    positive: whether the value must be > 0.
  """
  if isinstance(value, bool) or not isinstance(
      value, (int, float, np.integer, np.floating)):
    raise ValueError(f"{name} must be a number, got {value!r}.")
  if not math.isfinite(value):
    raise ValueError(f"{name} must be finite, got {value!r}.")
  if positive and value <= 0:
    raise ValueError(f"{name} must be > 0, got {value!r}.")
  if minimum is not None and value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value!r}.")
  return float(value)


def prng_key(name: str, value: Any) -> jax.Array:
  """``value`` if it is one JAX PRNG key.

  Accepts a typed key (``jax.random.key(seed)``, shape ``()``) or a raw
  ``uint32`` key (``jax.random.PRNGKey(seed)``).
  """
  dtype = getattr(value, "dtype", None)
  shape = getattr(value, "shape", None)
  if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
    if shape != ():
      raise ValueError(
          f"{name} must be a single PRNG key, got a batch of keys of shape "
          f"{shape}; split it or pass one key.")
    return value
  if (isinstance(value, (jax.Array, np.ndarray)) and dtype == np.uint32
      and len(shape) == 1 and shape[0] in (2, 4)):
    return value
  raise ValueError(
      f"{name} must be a JAX PRNG key such as jax.random.key(0), got "
      f"{value!r}.")


def mesh(value: Any) -> Mesh:
  """``value`` if it is a ``jax.sharding.Mesh``."""
  if not isinstance(value, Mesh):
    raise ValueError(
        "mesh must be a jax.sharding.Mesh with a 'data' axis (e.g. "
        f"pqd_jax.sharding.data_mesh()), got {value!r}.")
  return value


def torch_available() -> bool:
  """Whether PyTorch is installed (``from_pt`` conversions need it)."""
  import importlib.util

  return importlib.util.find_spec("torch") is not None


def require_torch_for_from_pt(from_pt: bool) -> None:
  """Raises ImportError when ``from_pt`` asks for a conversion without torch.

  Raises:
    ImportError: saying what to install.
  """
  if from_pt and not torch_available():
    raise ImportError("from_pt=True converts PyTorch weights, which needs "
                      "torch: pip install torch (its CPU build is enough).")
