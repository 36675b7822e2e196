import gzip
import os

import numpy as np
import pytest

from pqd_jax.data import fashion_mnist


def _write_idx(path, array, dtype_code=0x08):
  header = bytes([0, 0, dtype_code, array.ndim])
  header += b"".join(int(s).to_bytes(4, "big") for s in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def idx_dir(tmp_path):
  gen = np.random.default_rng(0)
  for prefix, n in (("train", 12), ("t10k", 5)):
    _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz",
               gen.integers(0, 256, (n, 28, 28)))
    _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz",
               gen.integers(0, 10, n))
  return str(tmp_path)


def test_reads_a_written_idx_split(idx_dir):
  images, labels = fashion_mnist.load("test", idx_dir)
  assert images.shape == (5, 28, 28) and images.dtype == np.uint8
  assert labels.shape == (5,) and labels.dtype == np.int32


def test_pqd_data_dir_is_used(idx_dir, monkeypatch):
  monkeypatch.setenv("PQD_DATA_DIR", idx_dir)
  assert fashion_mnist.find_dir() == idx_dir


def test_missing_files_say_how_to_get_them(tmp_path):
  with pytest.raises(FileNotFoundError, match="No Fashion-MNIST IDX files"):
    fashion_mnist.load("train", str(tmp_path))


def test_truncated_file_is_rejected(idx_dir):
  path = os.path.join(idx_dir, "t10k-images-idx3-ubyte.gz")
  with gzip.open(path, "rb") as f:
    raw = f.read()
  with gzip.open(path, "wb") as f:
    f.write(raw[:-10])
  with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz: header "
                     "says shape"):
    fashion_mnist.load("test", idx_dir)


FETCH = "the file is truncated or corrupt: fetch or copy it again"


def test_a_truncated_gz_names_the_file_and_says_fetch_it(idx_dir):
  path = os.path.join(idx_dir, "t10k-images-idx3-ubyte.gz")
  os.truncate(path, os.path.getsize(path) // 2)
  with pytest.raises(ValueError, match=r"cannot read .*t10k-images-idx3-"
                     rf"ubyte.gz: EOFError.*; {FETCH}"):
    fashion_mnist.load("test", idx_dir)


def test_a_gz_that_is_not_gzip_names_the_file(idx_dir):
  path = os.path.join(idx_dir, "t10k-labels-idx1-ubyte.gz")
  with open(path, "wb") as f:
    f.write(b"plain bytes, not gzip")
  with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz: "
                     rf"BadGzipFile.*; {FETCH}"):
    fashion_mnist.load("test", idx_dir)


def test_a_file_with_a_wrong_magic_names_the_file(idx_dir):
  path = os.path.join(idx_dir, "t10k-images-idx3-ubyte.gz")
  with gzip.open(path, "rb") as f:
    raw = f.read()
  with gzip.open(path, "wb") as f:
    f.write(b"\x01\x02" + raw[2:])
  with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: not an "
                     rf"IDX file.*; {FETCH}"):
    fashion_mnist.load("test", idx_dir)


def test_labels_for_other_images_name_the_labels_file(idx_dir):
  _write_idx(os.path.join(idx_dir, "t10k-labels-idx1-ubyte.gz"),
             np.zeros(4))
  with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz: labels "
                     r"of shape \(4,\) for the 5 images"):
    fashion_mnist.load("test", idx_dir)


def test_a_missing_labels_file_is_not_found(idx_dir):
  os.remove(os.path.join(idx_dir, "t10k-labels-idx1-ubyte.gz"))
  with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
    fashion_mnist.load("test", idx_dir)


def test_unknown_split(idx_dir):
  with pytest.raises(ValueError, match="Unknown split 'val'"):
    fashion_mnist.load("val", idx_dir)


@pytest.mark.skipif(
    not os.path.exists(os.path.join(fashion_mnist.DEBIAN_DIR,
                                    "train-images-idx3-ubyte.gz")),
    reason="Debian package dataset-fashion-mnist not installed")
def test_debian_package_is_the_full_dataset():
  images, labels = fashion_mnist.load("train", fashion_mnist.DEBIAN_DIR)
  assert images.shape == (60000, 28, 28)
  np.testing.assert_array_equal(np.bincount(labels), [6000] * 10)
