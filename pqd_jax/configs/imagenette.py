"""Imagenette (10 ImageNet classes, tfds ``imagenette/full-size-v2``).

The ImageNet setting of ``imagenet2012.py`` (Stable Diffusion VAE and UNet,
class-name prompts, ResNet-18 at 224) on the ten Imagenette classes: a
GPU-sized run of the paper's pipeline. Test = the validation split.
"""

import ml_collections

from pqd_jax.configs import imagenet2012

NUM_TRAIN_IMAGES = 9_469


def get_config() -> ml_collections.ConfigDict:
  """Returns the Imagenette configuration."""
  config = imagenet2012.get_config()
  config.dataset = "imagenette/full-size-v2"
  t = config.teacher
  t.warmup_steps = 5 * NUM_TRAIN_IMAGES // t.batch_size
  return config
