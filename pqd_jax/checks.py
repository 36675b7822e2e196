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

__all__ = ["choice", "integer", "number", "prng_key", "mesh"]


def choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
  """``value`` if it is one of the strings ``choices``."""
  if not isinstance(value, str) or value not in choices:
    raise ValueError(f"Unknown {name} {value!r}; expected one of {choices}.")
  return value


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
