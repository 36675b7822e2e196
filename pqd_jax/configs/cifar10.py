"""CIFAR-10 (tfds ``cifar10``, prepared in ``--config.data_dir``): 32×32×3.

The image-folder configuration (the Fashion-MNIST networks widened to three
channels, 8×8×4 latents) on tfds's CIFAR-10; the autoencoder, prior and
teacher are trained in the run.
"""

import ml_collections

from pqd_jax.configs import folder


def get_config() -> ml_collections.ConfigDict:
  """Returns the CIFAR-10 configuration."""
  config = folder.get_config()
  config.dataset = "cifar10"
  return config
