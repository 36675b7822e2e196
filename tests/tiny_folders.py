"""Small image folders built in the tests (PNG files of generated shapes)."""

import os

import numpy as np
from PIL import Image


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


def write_imagenet_folder(root: str, per_class=(6, 3), seed: int = 0, *,
                          size: int = 16,
                          wnids=("n01440764", "n01443537")) -> str:
  """Classes named by ImageNet WordNet ids (tench, goldfish), RGB images."""
  gen = np.random.default_rng(seed)
  for split, n in zip(("train", "test"), per_class, strict=True):
    for c, wnid in enumerate(wnids):
      os.makedirs(os.path.join(root, split, wnid), exist_ok=True)
      for i in range(n):
        img = gen.integers(0, 80, (size, size, 3)) + 120 * c
        Image.fromarray(img.astype(np.uint8)).save(
            os.path.join(root, split, wnid, f"{i}.png"))
  return root
