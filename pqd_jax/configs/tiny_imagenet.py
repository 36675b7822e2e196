"""The ImageNet config shrunk: ``--config=<this file>:<root>,<tiny SD>``.

Everything the paper's setting does that needs weights (SD VAE through
``subfolder="vae"``, SD UNet + CLIP prompts, ResNet-18 teacher and student
at a classifier size different from the VAE's) on 16×16 RGB images of a
generated folder and a tiny randomly initialised SD (``tests/tiny_sd.py``).
"""

import ml_collections

from pqd_jax.configs import imagenet2012


def get_config(arg: str = ",") -> ml_collections.ConfigDict:
  """``arg``: ``<image folder root>,<tiny Stable Diffusion directory>``."""
  root, sd_dir = arg.split(",")
  c = imagenet2012.get_config()
  c.dataset = f"folder:{root}"
  c.test_split = "test"
  c.image_size, c.classifier_image_size, c.ipc = 16, 12, 2
  c.autoencoder.pretrained = c.prior.pretrained = sd_dir
  c.autoencoder.revision = c.prior.revision = ""
  c.autoencoder.image_size = 16
  c.report.sweep_ks = (1, 2)
  c.decode.update(dict(num_steps=3, batch_size=8))
  c.teacher.update(dict(num_epochs=0, num_steps=3, batch_size=8,
                        warmup_steps=1))
  # Two passes of 2 per step: the accumulation path of the 1024 batch.
  c.student.update(dict(num_epochs=0, num_steps=3, batch_size=4,
                        grad_accumulation=2, num_seeds=1))
  return c
