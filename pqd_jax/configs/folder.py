"""An image folder, ``--dataset=folder:<root>``: 32×32 RGB, IPC 10.

``<root>/{train,test}/<class>/*.png|jpg``; class names are the sorted folder
names. The networks are the Fashion-MNIST default's, widened to 3 channels
and 32×32 images (8×8×4 latents).
"""

import ml_collections

from pqd_jax.configs import fashion_mnist


def get_config(root: str = "") -> ml_collections.ConfigDict:
  """Returns the configuration for the image folder at ``root``."""
  config = fashion_mnist.get_config()
  config.dataset = f"folder:{root}"
  config.image_size = 32
  config.channels = 3
  config.autoencoder.channels = 3
  config.autoencoder.image_size = 32
  # Nothing is shipped for a folder: train the autoencoder, prior, teacher.
  config.autoencoder.pretrained = ""
  config.prior.pretrained = ""
  config.teacher.checkpoint = ""
  return config
