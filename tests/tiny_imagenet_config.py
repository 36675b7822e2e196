"""The ImageNet config shrunk: ``--config=<this>:<folder root>,<tiny SD>``.

Everything the paper's setting does that needs weights (SD VAE through
``subfolder="vae"``, SD UNet + CLIP prompts, ResNet-18 teacher and student
at a classifier size different from the VAE's) on 16×16 RGB images of a
generated folder and a tiny randomly initialised SD (``tests/tiny_sd.py``).
"""

import os

import numpy as np
from PIL import Image

from pqd_jax.configs import imagenet2012


def get_config(arg: str = ","):
  root, sd_dir = arg.split(",")
  c = imagenet2012.get_config()
  c.dataset = f"folder:{root}"
  c.test_split = "test"
  c.image_size, c.classifier_image_size, c.ipc = 16, 12, 2
  c.autoencoder.pretrained = c.prior.pretrained = sd_dir
  c.autoencoder.revision = c.prior.revision = ""
  c.autoencoder.image_size = 16
  c.quantize.sweep_ks = (1, 2)
  c.decode.update(dict(num_steps=3, batch_size=8))
  c.teacher.update(dict(num_epochs=0, num_steps=3, batch_size=8,
                        warmup_steps=1))
  c.student.update(dict(num_epochs=0, num_steps=3, batch_size=4))
  return c


def write_folder(root: str, per_class=(6, 3), seed: int = 0) -> str:
  """Two classes named by ImageNet WordNet ids (tench, goldfish), 16×16 RGB."""
  gen = np.random.default_rng(seed)
  for split, n in zip(("train", "test"), per_class, strict=True):
    for c, wnid in enumerate(("n01440764", "n01443537")):
      os.makedirs(os.path.join(root, split, wnid), exist_ok=True)
      for i in range(n):
        img = gen.integers(0, 80, (16, 16, 3)) + 120 * c
        Image.fromarray(img.astype(np.uint8)).save(
            os.path.join(root, split, wnid, f"{i}.png"))
  return root
