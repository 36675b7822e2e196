"""Splits.check: what a run needs of its splits, before any stage runs."""

import os
import shutil

import pytest

from pqd_jax.configs import tiny
from pqd_jax.data import splits
from tests.tiny_folders import write_folder


@pytest.fixture()
def root(tmp_path):
  return write_folder(str(tmp_path / "data"))


def _splits(root):
  return splits.Splits(tiny.get_config(root))


def test_a_whole_folder_passes(root):
  _splits(root).check(ipc=2)


def test_a_test_split_missing_a_class_is_an_error_naming_it(root):
  shutil.rmtree(os.path.join(root, "test", "left"))
  with pytest.raises(ValueError, match=r"'test' split has other classes than "
                     r"'train': missing \['left'\], extra \[\]"):
    _splits(root).check(ipc=2)


def test_a_test_split_with_another_class_is_an_error_naming_it(root):
  os.rename(os.path.join(root, "test", "left"),
            os.path.join(root, "test", "lft"))
  with pytest.raises(ValueError, match=r"missing \['left'\], extra \['lft'\]"):
    _splits(root).check(ipc=2)


def test_an_empty_training_class_is_an_error_naming_it(root):
  os.makedirs(os.path.join(root, "train", "zebra"))
  os.makedirs(os.path.join(root, "test", "zebra"))
  with pytest.raises(ValueError, match=r"training classes \['zebra'\] have "
                     "no images"):
    _splits(root).check(ipc=2)


def test_ipc_above_the_smallest_class_says_what_to_use(root):
  for name in sorted(os.listdir(os.path.join(root, "train", "bar")))[5:]:
    os.remove(os.path.join(root, "train", "bar", name))
  with pytest.raises(ValueError, match=r"ipc=6 is more than the 5 training "
                     r"images of class 'bar': use --config.ipc=5 or fewer"):
    _splits(root).check(ipc=6)
  _splits(root).check(ipc=5)


def test_a_missing_test_split_is_found_at_start(root):
  shutil.rmtree(os.path.join(root, "test"))
  with pytest.raises(FileNotFoundError, match="no 'test' split"):
    _splits(root).check(ipc=2)


def test_hidden_directories_are_not_classes(root):
  os.makedirs(os.path.join(root, "train", ".ipynb_checkpoints"))
  assert ".ipynb_checkpoints" not in _splits(root).source("train").class_names
  _splits(root).check(ipc=2)


def test_a_storage_factor_needs_its_images_per_slot(root):
  # 12 training images per class: IPC 4 of 4 images each needs 16.
  with pytest.raises(ValueError, match=r"ipc=4 x 4 images per slot "
                     r"\(factor=2\) is more than the 12 training images of "
                     r"class '\w+': use --config.ipc=3 or fewer"):
    _splits(root).check(4, factor=2)
