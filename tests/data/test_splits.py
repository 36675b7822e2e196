import os

import numpy as np
import pytest
from PIL import Image

from pqd_jax.data import sources, splits, transforms
from tests.data.test_sources import _folder


def _splits(root, **kw):
  import ml_collections

  c = ml_collections.ConfigDict(dict(
      dataset=f"folder:{root}", data_dir="", train_split="train",
      test_split="test", image_size=8, channels=1))
  c.update(kw)
  return splits.Splits(c)


class TestFingerprint:

  def test_is_stable_for_the_same_data(self, tmp_path):
    root = _folder(str(tmp_path), "train")
    assert (_splits(root).fingerprint("train")
            == _splits(root).fingerprint("train"))

  def test_changes_when_an_image_is_overwritten(self, tmp_path):
    root = _folder(str(tmp_path), "train")
    before = _splits(root).fingerprint("train")
    path = os.path.join(root, "train", "cat", "0.png")
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(path)
    os.utime(path, ns=(1, 1))  # even with an old mtime: the size changed
    assert _splits(root).fingerprint("train") != before

  def test_changes_when_a_class_is_added(self, tmp_path):
    root = _folder(str(tmp_path), "train")
    before = _splits(root).fingerprint("train")
    _folder(root, "train", classes=("gnu",))
    assert _splits(root).fingerprint("train") != before

  def test_names_the_split(self, tmp_path):
    root = _folder(str(tmp_path), "train")
    _folder(root, "other")
    assert (_splits(root).fingerprint("train")
            != _splits(root, train_split="other").fingerprint("train"))

  def test_of_arrays_covers_their_bytes(self):
    images = np.zeros((4, 2, 2), np.uint8)
    a = sources.ArraySource(images, [0, 0, 1, 1], ["a", "b"]).fingerprint()
    images[0, 0, 0] = 1
    b = sources.ArraySource(images, [0, 0, 1, 1], ["a", "b"]).fingerprint()
    assert a != b


def test_open_split_reads_the_config_split_at_its_image_size(tmp_path):
  root = _folder(str(tmp_path), "test")
  test = _splits(root).source("test", image_size=16)
  assert test.read().shape[1:] == (16, 16, 1)


def test_splits_refuse_another_split_naming_it(tmp_path):
  with pytest.raises(ValueError, match="split 'val' is not 'train' or 'test'"):
    _splits(str(tmp_path)).source("val")


def test_only_the_test_split_is_centre_cropped(tmp_path):
  gen = np.random.default_rng(0)
  for split in ("train", "test"):
    os.makedirs(tmp_path / split / "a")
    Image.fromarray(gen.integers(0, 255, (12, 20), np.uint8)).save(
        tmp_path / split / "a" / "0.png")
  data = _splits(str(tmp_path), test_crop=0.875)
  for split, crop in (("train", 0.0), ("test", 0.875)):
    with Image.open(tmp_path / split / "a" / "0.png") as image:
      expected = np.asarray(transforms.resize(image, 8, crop))
    np.testing.assert_array_equal(data.source(split)[0][0][..., 0], expected)
