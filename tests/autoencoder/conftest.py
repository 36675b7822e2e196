import ml_collections
import numpy as np
import pytest

from pqd_jax.data import sources


def tiny_config(**overrides):
  config = ml_collections.ConfigDict(dict(
      channels=1, image_size=8, block_out_channels=(8, 8),
      layers_per_block=1, latent_channels=2, norm_num_groups=4,
      kl_weight=1e-4, learning_rate=3e-3, weight_decay=0.0,
      warmup_steps=2, batch_size=8, num_steps=6, seed=0))
  config.update(overrides)
  return config


def tiny_images(n=32, seed=0):
  """Blobs on a dark background: structured enough to learn quickly."""
  gen = np.random.default_rng(seed)
  yy, xx = np.mgrid[:8, :8]
  cy, cx = gen.uniform(1, 6, (2, n))
  r = gen.uniform(1, 3, n)
  img = ((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2
         < r[:, None, None] ** 2)
  return (img * 255).astype(np.uint8)[..., None], (np.arange(n) % 2)


@pytest.fixture
def tiny_source():
  images, labels = tiny_images()
  return sources.ArraySource(images, labels, ("a", "b"))
