import numpy as np
import pytest
from PIL import Image

from pqd_jax.data import sources, synthetic


def test_folder_names_give_every_class_its_own_directory():
  names = synthetic.folder_names(["T-shirt/top", "Trouser", "..", "a", "a"])
  assert names == ["T-shirt_top", "Trouser", "class_2", "a_3", "a_4"]


def test_the_synthetic_folder_reads_back_as_an_image_folder(tmp_path):
  images = np.linspace(-1, 1, 4 * 8 * 8).reshape(4, 8, 8, 1)
  synthetic.write_folder(str(tmp_path / "folder"), images,
                         np.array([0, 0, 1, 1]), np.ones(4),
                         ["T-shirt/top", "Trouser"])
  src = sources.FolderSource(str(tmp_path), "folder")
  assert src.class_names == ("T-shirt_top", "Trouser")
  np.testing.assert_array_equal(src.labels, [0, 0, 1, 1])


def test_a_saved_set_loads_with_its_weights_or_uniform(tmp_path):
  images = np.zeros((4, 8, 8, 1), np.float32)
  weights = np.array([0.5, 1.5, 1.0, 1.0], np.float32)
  synthetic.save_set(str(tmp_path), images, np.array([0, 0, 1, 1]), weights,
                     ["a", "b"])
  _, labels, w = synthetic.load_set(str(tmp_path))
  np.testing.assert_array_equal(w, weights)
  np.testing.assert_array_equal(synthetic.load_set(str(tmp_path),
                                                   "uniform")[2], 1.0)
  assert (tmp_path / "grid.png").exists()


def test_load_set_refuses_other_weights_naming_them(tmp_path):
  with pytest.raises(ValueError, match="'mass'"):
    synthetic.load_set(str(tmp_path), "mass")


def test_the_grid_shows_at_most_ten_classes_of_ten_images():
  labels = np.repeat(np.arange(20), 15)
  keep, rows = synthetic.grid_subset(labels)
  assert rows == 10 and len(keep) == 100
  np.testing.assert_array_equal(labels[keep], np.repeat(np.arange(10), 10))


def test_the_grid_of_a_small_set_is_the_whole_set():
  labels = np.repeat(np.arange(3), 2)
  keep, rows = synthetic.grid_subset(labels)
  assert rows == 3
  np.testing.assert_array_equal(keep, np.arange(6))


def test_a_saved_grid_is_bounded(tmp_path):
  labels = np.repeat(np.arange(12), 11)
  images = np.zeros((len(labels), 4, 4, 1), np.float32)
  synthetic.save_set(str(tmp_path), images, labels, np.ones(len(labels)),
                     [str(c) for c in range(12)])
  assert Image.open(tmp_path / "grid.png").size == (40, 40)
