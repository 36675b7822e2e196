import os
import re

import numpy as np
import pytest
from PIL import Image

from pqd_jax.data import formation, sources, synthetic


def test_folder_names_give_every_class_its_own_directory():
  names = synthetic.folder_names(["T-shirt/top", "Trouser", "..", "a", "a"])
  assert names == ["T-shirt_top", "Trouser", "class_2", "a_3", "a_4"]


def test_the_synthetic_folder_reads_back_as_an_image_folder(tmp_path):
  images = np.linspace(-1, 1, 4 * 8 * 8).reshape(4, 8, 8, 1)
  synthetic.save_set(str(tmp_path), images, np.array([0, 0, 1, 1]),
                     np.ones(4), ["T-shirt/top", "Trouser"])
  src = sources.FolderSource(str(tmp_path), "folder")
  assert src.class_names == ("T-shirt_top", "Trouser")
  np.testing.assert_array_equal(src.labels, [0, 0, 1, 1])
  np.testing.assert_array_equal(src.read(), synthetic.to_uint8(images))


def test_the_images_read_back_as_their_uint8_rounding(tmp_path):
  images = np.random.default_rng(0).uniform(-1.2, 1.2, (6, 5, 5, 3))
  synthetic.save_set(str(tmp_path), images, np.array([2, 2, 0, 0, 0, 1]),
                     np.ones(6), ["a", "b", "c"])
  lazy, labels, _ = synthetic.load_set(str(tmp_path))
  expected = synthetic.to_uint8(images) / np.float32(127.5) - 1
  np.testing.assert_array_equal(labels, [2, 2, 0, 0, 0, 1])
  np.testing.assert_allclose(lazy[:], expected, atol=1e-6)
  np.testing.assert_allclose(lazy.take([5, 0, 3]), expected[[5, 0, 3]],
                             atol=1e-6)
  assert np.abs(lazy[:] - np.clip(images, -1, 1)).max() <= 1 / 255 + 1e-6


def test_float_images_are_stored_at_the_writers_size(tmp_path):
  writer = synthetic.SetWriter(str(tmp_path), ["a"], (4, 4, 1))
  writer.write_class(0, np.zeros((3, 8, 8, 1), np.float32), 0)
  writer.finish(np.zeros(3, np.int32), np.ones(3))
  assert synthetic.load_set(str(tmp_path))[0].shape == (3, 4, 4, 1)


def test_a_finished_class_is_one_whose_shard_holds_its_count(tmp_path):
  writer = synthetic.SetWriter(str(tmp_path), ["a", "b"], (4, 4, 1))
  writer.write_class(1, np.zeros((2, 4, 4, 1), np.float32), 0)
  assert writer.finished(1, 2)
  assert not writer.finished(1, 3) and not writer.finished(0, 2)
  with pytest.raises(ValueError, match="class 0"):
    writer.finish(np.array([1, 1, 0, 0]), np.ones(4))


def test_a_set_whose_classes_are_not_contiguous_is_refused(tmp_path):
  with pytest.raises(ValueError, match="contiguous"):
    synthetic.save_set(str(tmp_path), np.zeros((3, 4, 4, 1)),
                       np.array([0, 1, 0]), np.ones(3), ["a", "b"])


def test_a_cut_shard_is_a_problem_naming_it(tmp_path):
  synthetic.save_set(str(tmp_path), np.zeros((4, 4, 4, 1)),
                     np.array([0, 0, 1, 1]), np.ones(4), ["a", "b"])
  assert synthetic.problem(str(tmp_path)) == ""
  shard = tmp_path / "shards" / "00001.npy"
  shard.write_bytes(shard.read_bytes()[:-5])
  assert "00001.npy" in synthetic.problem(str(tmp_path))


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


def test_load_set_of_a_directory_without_a_set_names_it(tmp_path):
  with pytest.raises(ValueError, match="set.npz"):
    synthetic.load_set(str(tmp_path))


def _saved_set(tmp_path):
  synthetic.save_set(str(tmp_path), np.zeros((4, 8, 8, 1), np.float32),
                     np.array([0, 0, 1, 1]), np.ones(4), ["a", "b"])
  return tmp_path


def _remake(tmp_path):
  return (f"delete {re.escape(str(tmp_path))} and run again: the stage "
          "makes it again")


def test_load_set_of_a_truncated_set_npz_names_it(tmp_path):
  path = _saved_set(tmp_path) / "set.npz"
  os.truncate(path, os.path.getsize(path) // 2)
  with pytest.raises(ValueError, match=rf"cannot read {re.escape(str(path))}:"
                     rf" BadZipFile.*; {_remake(tmp_path)}"):
    synthetic.load_set(str(tmp_path))


def test_load_set_of_a_garbage_set_npz_says_it_is_no_archive(tmp_path):
  path = _saved_set(tmp_path) / "set.npz"
  path.write_bytes(b"garbage")
  with pytest.raises(ValueError, match=r"set.npz: not an .npz \(zip\) "
                     "archive"):
    synthetic.load_set(str(tmp_path))


def test_a_shard_cut_short_is_named_when_its_rows_are_read(tmp_path):
  shard = _saved_set(tmp_path) / "shards" / "00001.npy"
  os.truncate(shard, os.path.getsize(shard) - 5)
  images, _, _ = synthetic.load_set(str(tmp_path))
  with pytest.raises(ValueError, match=rf"{re.escape(str(shard))}: cut short"
                     rf".*; {_remake(tmp_path)}"):
    images.take(np.arange(4))


def test_a_shard_of_another_count_is_named_with_both_counts(tmp_path):
  shard = _saved_set(tmp_path) / "shards" / "00001.npy"
  np.save(shard, np.zeros((3, 8, 8, 1), np.uint8))
  images, _, _ = synthetic.load_set(str(tmp_path))
  with pytest.raises(ValueError, match=r"00001.npy: it holds \(3, 8, 8, 1\), "
                     r"set.npz says \(2, 8, 8, 1\)"):
    images.take(np.arange(4))


def test_a_truncated_set_npz_is_a_problem_not_an_error(tmp_path):
  path = _saved_set(tmp_path) / "set.npz"
  os.truncate(path, os.path.getsize(path) // 2)
  assert synthetic.problem(str(tmp_path)).startswith(
      "set.npz does not read back")


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


def test_a_factor_two_writer_stores_mosaics_of_the_tiles(tmp_path):
  gen = np.random.default_rng(0)
  tiles = gen.uniform(-1, 1, (8, 4, 4, 1)).astype(np.float32)
  writer = synthetic.SetWriter(str(tmp_path), ["a", "b"], (8, 8, 1),
                               factor=2)
  writer.write_class(0, tiles[:4], 0)
  writer.write_class(1, tiles[4:], 1)
  weights = np.arange(8, dtype=np.float32).reshape(2, 4)
  writer.finish(np.array([0, 1]), weights)
  images, labels, set_weights = synthetic.load_set(str(tmp_path))
  expected = formation.tile(synthetic.to_uint8(tiles), 2)
  np.testing.assert_array_equal(
      synthetic.to_uint8(images.take(np.arange(2))), expected)
  assert labels.tolist() == [0, 1]
  np.testing.assert_array_equal(set_weights, weights)
  with open(tmp_path / "folder" / "weights.csv") as f:
    assert f.readline().strip() == ("file,class,label,weight_tile0,"
                                    "weight_tile1,weight_tile2,weight_tile3")


def test_a_factor_two_set_needs_a_weight_per_tile(tmp_path):
  writer = synthetic.SetWriter(str(tmp_path), ["a"], (8, 8, 1), factor=2)
  writer.write_class(0, np.zeros((4, 4, 4, 1), np.float32), 0)
  with pytest.raises(ValueError, match=r"weights of shape \(1,\) for 1 "
                     r"stored images of 4 tile"):
    writer.finish(np.array([0]), np.ones(1))
