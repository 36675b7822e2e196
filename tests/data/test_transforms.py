"""The evaluation resize against torchvision's Resize(256) + CenterCrop(224).

torchvision's output comes from ``tools/torchvision_fixture.py`` (torch is
not a test dependency), on the same generated non-square images.
"""

import os

import numpy as np
import pytest
from PIL import Image

from pqd_jax.data import transforms
from tests.conftest import ROOT, load_script


def _tool():
  return load_script("tools", "torchvision_fixture.py")


@pytest.mark.parametrize("width, height", [(333, 250), (250, 333)])
def test_the_crop_is_torchvisions_resize_256_center_crop_224(width, height):
  image = Image.fromarray(_tool().eval_image(width, height))
  ours = np.asarray(transforms.resize(image, 224,
                                      transforms.SRE2L_CROP_FRACTION))
  with np.load(os.path.join(ROOT, "tests", "fixtures", "torchvision",
                            "eval_crop.npz")) as f:
    theirs = f[f"{width}x{height}"]
  assert ours.shape == theirs.shape == (224, 224, 3)
  diff = np.abs(ours.astype(int) - theirs.astype(int))
  assert diff.max() <= 1, diff.max()  # within 1/255


def test_no_crop_squashes_to_the_side():
  image = Image.fromarray(np.zeros((30, 50, 3), np.uint8))
  assert transforms.resize(image, 16).size == (16, 16)


def test_a_crop_keeps_the_aspect_ratio():
  # A 2:1 bar spanning the whole height stays whole after the crop of a
  # square from the middle, while squashing would halve its width.
  img = np.zeros((40, 80), np.uint8)
  img[:, 36:44] = 255  # 8 px wide, centred
  out = np.asarray(transforms.resize(Image.fromarray(img), 20, 1.0))
  assert out.shape == (20, 20)
  assert (out[:, 10] > 200).all() and (out[:, [0, 19]] < 10).all()
  assert 3 <= (out[10] > 127).sum() <= 5  # 8 px at half scale


def test_a_crop_fraction_outside_the_unit_interval_is_refused():
  image = Image.fromarray(np.zeros((8, 8), np.uint8))
  with pytest.raises(ValueError, match=r"crop_fraction must be in \[0, 1\]"):
    transforms.resize(image, 4, 1.5)
