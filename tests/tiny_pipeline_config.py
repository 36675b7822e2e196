"""A tiny pipeline config on an image folder: ``--config=<this>:<root>``.

8×8 grayscale images, IPC 2, networks of a few thousand parameters and a few
steps each: the whole pipeline runs in about a minute on a CPU.
"""

import os

import numpy as np
from PIL import Image

from pqd_jax.configs import fashion_mnist


def get_config(root: str = ""):
  c = fashion_mnist.get_config()
  c.dataset = f"folder:{root}"
  c.image_size, c.channels, c.ipc = 8, 1, 2
  c.autoencoder.pretrained = c.prior.pretrained = c.teacher.checkpoint = ""
  c.autoencoder.update(dict(
      channels=1, image_size=8, block_out_channels=(8, 8), layers_per_block=1,
      latent_channels=2, norm_num_groups=4, num_steps=6, batch_size=8,
      warmup_steps=2))
  c.latents.dtype = "float32"
  c.prior.update(dict(
      block_out_channels=(32, 32), attention_head_dim=8,
      cross_attention_dim=16, num_steps=3, batch_size=8, warmup_steps=1))
  c.report.sweep_ks = (1, 2)
  c.decode.update(dict(strength=0.5, num_steps=4, guidance_scale=2.0,
                       batch_size=16))
  c.teacher.update(dict(width=8, depth=2, num_steps=5, batch_size=16,
                        warmup_steps=1))
  c.student.update(dict(width=8, depth=2, num_steps=4, batch_size=6,
                        num_seeds=2))
  return c


def write_folder(root: str, per_class=(12, 4), seed: int = 0) -> str:
  """Three classes of 8×8 shapes (blob left, blob right, bar) as PNGs."""
  gen = np.random.default_rng(seed)
  yy, xx = np.mgrid[:8, :8]
  shapes = {
      "left": lambda: (yy - 3.5) ** 2 + (xx - 2) ** 2 < 4,
      "right": lambda: (yy - 3.5) ** 2 + (xx - 5) ** 2 < 4,
      "bar": lambda: np.abs(yy - 3.5) < 1.2,
  }
  for split, n in zip(("train", "test"), per_class, strict=True):
    for name, shape in shapes.items():
      os.makedirs(os.path.join(root, split, name), exist_ok=True)
      for i in range(n):
        img = shape() * 200 + gen.integers(0, 40, (8, 8))
        Image.fromarray(img.astype(np.uint8)).save(
            os.path.join(root, split, name, f"{i}.png"))
  return root
