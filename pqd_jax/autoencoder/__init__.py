"""The KL autoencoder: build or load, encode/decode, train a small one."""

from pqd_jax.autoencoder import model
from pqd_jax.autoencoder.model import *  # noqa: F403

# The package exports its model module's API, listed once in model.__all__.
__all__ = list(model.__all__)
