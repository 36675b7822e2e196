"""What diffusers' Flax modules need: jit static arguments, a compute dtype."""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["cast_floating", "hashable_module"]


def cast_floating(tree: Any, dtype: Any) -> Any:
  """``tree`` with its floating leaves in ``dtype`` (others as they are)."""
  return jax.tree.map(
      lambda x: x.astype(dtype) if (jnp.issubdtype(x.dtype, jnp.floating)
                                    and x.dtype != dtype) else x, tree)


def hashable_module(module: nn.Module) -> nn.Module:
  """The module with every list attribute turned into a tuple.

  ``from_pretrained`` fills the module's fields from ``config.json``, whose
  arrays come back as lists; a module with list fields cannot be hashed, so
  it cannot be a static argument of ``jax.jit``.
  """
  lists = {f.name: tuple(getattr(module, f.name))
           for f in dataclasses.fields(module)
           if isinstance(getattr(module, f.name, None), list)}
  return module.clone(**lists) if lists else module
