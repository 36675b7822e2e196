"""A tiny pipeline on an image folder: ``--config=<this file>:<root>``.

8×8 grayscale images, IPC 2, networks of a few thousand parameters and a few
steps each, everything trained here: the whole pipeline runs in about a
minute on a CPU. The tests and the benchmarks' tests run it.
"""

import ml_collections

from pqd_jax.configs import fashion_mnist


def get_config(root: str = "") -> ml_collections.ConfigDict:
  """The Fashion-MNIST config shrunk, on the image folder ``root``."""
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
