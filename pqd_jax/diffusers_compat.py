"""What diffusers' Flax modules need to be used as jit static arguments."""

import dataclasses

import flax.linen as nn

__all__ = ["hashable_module"]


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
