import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from pqd_jax.data import fashion_mnist, sources
from tests.data.test_fashion_mnist import _write_idx


def _folder(root, split, classes=("cat", "dog", "frog"), per_class=4,
            mode="RGB", size=(12, 10)):
  gen = np.random.default_rng(0)
  for name in classes:
    d = os.path.join(root, split, name)
    os.makedirs(d, exist_ok=True)
    for i in range(per_class):
      shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
      Image.fromarray(gen.integers(0, 256, shape, dtype=np.uint8),
                      mode).save(os.path.join(d, f"{i}.png"))
  return root


class TestFolderSource:

  def test_class_names_are_sorted_folder_names(self, tmp_path):
    root = _folder(str(tmp_path), "train", classes=("zebra", "ant", "moth"))
    src = sources.open_source(f"folder:{root}", "train")
    assert src.class_names == ("ant", "moth", "zebra")
    np.testing.assert_array_equal(src.labels, np.repeat([0, 1, 2], 4))

  def test_images_are_resized_and_converted(self, tmp_path):
    root = _folder(str(tmp_path), "train")
    src = sources.open_source(f"folder:{root}", "train", image_size=8,
                              channels=1)
    image, label = src[5]
    assert image.shape == (8, 8, 1) and image.dtype == np.uint8
    assert label == 1

  def test_grayscale_files_stay_grayscale(self, tmp_path):
    root = _folder(str(tmp_path), "test", mode="L")
    image, _ = sources.open_source(f"folder:{root}", "test")[0]
    assert image.shape == (10, 12, 1)

  def test_pixels_are_the_files_pixels(self, tmp_path):
    root = _folder(str(tmp_path), "train")
    src = sources.open_source(f"folder:{root}", "train")
    with Image.open(src.files[3]) as im:
      np.testing.assert_array_equal(src[3][0], np.asarray(im))

  def test_missing_split_says_what_is_expected(self, tmp_path):
    root = _folder(str(tmp_path), "train")
    with pytest.raises(FileNotFoundError, match="no 'test' split"):
      sources.open_source(f"folder:{root}", "test")

  def test_folder_without_images(self, tmp_path):
    os.makedirs(tmp_path / "train" / "empty")
    with pytest.raises(FileNotFoundError, match="No images"):
      sources.open_source(f"folder:{tmp_path}", "train")

  def test_a_truncated_image_names_the_file(self, tmp_path):
    root = _folder(str(tmp_path), "train")
    path = os.path.join(root, "train", "dog", "1.png")
    os.truncate(path, os.path.getsize(path) // 2)
    src = sources.open_source(f"folder:{root}", "train")
    with pytest.raises(ValueError, match=rf"cannot read {re.escape(path)}: "
                       "OSError: image file is truncated; the file is "
                       "truncated or corrupt: fetch or copy it again"):
      src[5]

  def test_a_file_that_is_no_image_names_the_file(self, tmp_path):
    root = _folder(str(tmp_path), "train")
    path = os.path.join(root, "train", "cat", "0.png")
    with open(path, "wb") as f:
      f.write(b"not a png")
    src = sources.open_source(f"folder:{root}", "train")
    with pytest.raises(ValueError, match=rf"cannot read {re.escape(path)}: "
                       "UnidentifiedImageError.*fetch or copy it again"):
      src[0]

  def test_images_without_class_folders_say_how_to_lay_them_out(
      self, tmp_path):
    os.makedirs(tmp_path / "train")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "train" /
                                                     "a.png")
    with pytest.raises(FileNotFoundError,
                       match=r"1 images but no class folders.*<class>/<image>"):
      sources.open_source(f"folder:{tmp_path}", "train")

  def test_bad_channels(self, tmp_path):
    root = _folder(str(tmp_path), "train")
    with pytest.raises(ValueError, match="channels must be 1, 3 or None"):
      sources.FolderSource(root, "train", channels=2)


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  """A small array_record tfds dataset built offline, without TensorFlow."""
  import tensorflow_datasets as tfds

  d = str(tmp_path_factory.mktemp("tfds"))
  png_dir = os.path.join(d, "png")
  os.makedirs(png_dir)

  class PqdTinyShapes(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Image(shape=(8, 8, 1)),
              "label": tfds.features.ClassLabel(
                  names=["circle", "square", "star"]),
          }),
          supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples(9),
              "test": self._generate_examples(3)}

    def _generate_examples(self, n):
      gen = np.random.default_rng(n)
      for i in range(n):
        path = os.path.join(png_dir, f"{n}_{i}.png")
        Image.fromarray(gen.integers(0, 256, (8, 8), dtype=np.uint8)).save(
            path)
        yield i, {"image": path, "label": i % 3}

  PqdTinyShapes(data_dir=d, file_format="array_record").download_and_prepare()
  return d


class TestTfdsSource:

  def test_reads_records_and_class_names(self, tfds_dir):
    src = sources.open_source("pqd_tiny_shapes", "train", data_dir=tfds_dir)
    assert len(src) == 9
    assert src.class_names == ("circle", "square", "star")
    image, label = src[4]
    assert image.shape == (8, 8, 1) and image.dtype == np.uint8
    assert label == src.labels[4]

  def test_labels_are_read_without_decoding_an_image(self, tfds_dir,
                                                     monkeypatch):
    import tensorflow_datasets as tfds

    decoded = []
    decode = tfds.features.Image.decode_example_np
    monkeypatch.setattr(tfds.features.Image, "decode_example_np",
                        lambda self, *a, **kw: (decoded.append(1),
                                                decode(self, *a, **kw))[1])
    src = sources.open_source("pqd_tiny_shapes", "train", data_dir=tfds_dir)
    assert len(src.labels) == 9 and decoded == []
    src[3]
    assert decoded == [1]

  def test_resizes_on_request(self, tfds_dir):
    src = sources.open_source("pqd_tiny_shapes", "test", data_dir=tfds_dir,
                              image_size=16, channels=3)
    assert src[0][0].shape == (16, 16, 3)

  def test_fingerprint_follows_the_split_shards(self, tfds_dir):
    train = sources.open_source("pqd_tiny_shapes", "train", data_dir=tfds_dir)
    test = sources.open_source("pqd_tiny_shapes", "test", data_dir=tfds_dir)
    assert train.files and all("-train." in p.name for p in train.files)
    before = train.fingerprint()
    assert before != test.fingerprint()
    shard = train.files[0]
    os.utime(shard, ns=(1, 1))
    assert sources.open_source("pqd_tiny_shapes", "train",
                               data_dir=tfds_dir).fingerprint() != before

  def test_unprepared_dataset_is_a_clear_error(self, tfds_dir, tmp_path):
    # Registered (by the fixture) but not prepared in this data_dir.
    with pytest.raises(FileNotFoundError, match="not prepared"):
      sources.open_source("pqd_tiny_shapes", "train", data_dir=str(tmp_path))

  def test_unknown_dataset_name(self, tmp_path):
    with pytest.raises(ValueError, match="Unknown dataset 'pqd_no_such_"):
      sources.open_source("pqd_no_such_dataset", "train",
                          data_dir=str(tmp_path))


class TestArraySource:

  def test_labels_out_of_range(self):
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
      sources.ArraySource(np.zeros((3, 4, 4), np.uint8), np.array([0, 1, 2]),
                          ("a", "b"))

  def test_fractional_labels(self):
    with pytest.raises(ValueError, match="labels must be integers"):
      sources.ArraySource(np.zeros((2, 4, 4), np.uint8), np.array([0, 0.5]),
                          ("a", "b"))

  def test_float_images(self):
    with pytest.raises(ValueError, match="images must be uint8"):
      sources.ArraySource(np.zeros((3, 4, 4)), np.zeros(3, int), ("a",))


@pytest.mark.skipif(
    not os.path.exists(os.path.join(fashion_mnist.DEBIAN_DIR,
                                    "t10k-images-idx3-ubyte.gz")),
    reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_source_has_names_and_full_test_split():
  src = sources.open_source("fashion_mnist", "test")
  assert len(src) == 10_000
  assert src.class_names[9] == "Ankle boot"
  assert src[0][0].shape == (28, 28, 1)


def test_a_corrupt_fashion_mnist_file_is_named_not_looked_up_in_tfds(
    tmp_path):
  for prefix in ("train", "t10k"):
    _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz",
               np.zeros((3, 28, 28)))
    _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.zeros(3))
  path = tmp_path / "t10k-labels-idx1-ubyte.gz"
  os.truncate(path, os.path.getsize(path) // 2)
  with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz: EOFError"):
    sources.open_source("fashion_mnist", "test", data_dir=str(tmp_path))


def test_empty_dataset_name():
  with pytest.raises(ValueError, match="dataset must be 'fashion_mnist'"):
    sources.open_source("", "train")


@pytest.mark.parametrize("image_size", [0, 2.5])
def test_bad_image_size(image_size):
  with pytest.raises(ValueError, match="image_size must be"):
    sources.open_source("fashion_mnist", "test", image_size=image_size)


def test_bad_channels_for_fashion_mnist():
  with pytest.raises(ValueError, match="channels must be 1, 3 or None, got 2"):
    sources.open_source("fashion_mnist", "test", channels=2)



class TestTfdsLabelCache:

  def test_a_second_opening_reads_the_cached_labels(self, tfds_dir, tmp_path):
    cache = str(tmp_path / "labels")
    first = sources.open_source("pqd_tiny_shapes", "train", data_dir=tfds_dir,
                                label_cache=cache)
    (path,) = [os.path.join(cache, f) for f in os.listdir(cache)]
    np.save(path, first.labels[::-1])  # what the next opening must return
    again = sources.open_source("pqd_tiny_shapes", "train", data_dir=tfds_dir,
                                label_cache=cache)
    np.testing.assert_array_equal(again.labels, first.labels[::-1])

  def test_a_damaged_cache_is_scanned_again(self, tfds_dir, tmp_path):
    cache = str(tmp_path / "labels")
    first = sources.open_source("pqd_tiny_shapes", "train", data_dir=tfds_dir,
                                label_cache=cache)
    (path,) = [os.path.join(cache, f) for f in os.listdir(cache)]
    os.truncate(path, 20)
    again = sources.open_source("pqd_tiny_shapes", "train", data_dir=tfds_dir,
                                label_cache=cache)
    np.testing.assert_array_equal(again.labels, first.labels)
    np.testing.assert_array_equal(np.load(path), first.labels)

  def test_changed_shards_are_scanned_again(self, tfds_dir, tmp_path):
    cache = str(tmp_path / "labels")
    src = sources.open_source("pqd_tiny_shapes", "test", data_dir=tfds_dir,
                              label_cache=cache)
    os.utime(src.files[0], ns=(2, 2))
    sources.open_source("pqd_tiny_shapes", "test", data_dir=tfds_dir,
                        label_cache=cache)
    assert len(os.listdir(cache)) == 2

  def test_a_tfrecord_dataset_says_how_to_rebuild_it(self, tfds_dir,
                                                     tmp_path):
    copy = tmp_path / "tfds"
    shutil.copytree(tfds_dir, copy)
    for path in copy.rglob("*array_record*"):
      path.rename(path.with_name(path.name.replace("array_record",
                                                   "tfrecord")))
    with pytest.raises(FileNotFoundError,
                       match="--file_format=array_record"):
      sources.open_source("pqd_tiny_shapes", "train", data_dir=str(copy))
