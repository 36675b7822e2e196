import gzip
import hashlib
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


class TestDownload:

  def _mirror(self, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    gen = np.random.default_rng(0)
    hashes = {}
    for stem, array in (
        ("train-images-idx3-ubyte", gen.integers(0, 256, (6, 28, 28))),
        ("train-labels-idx1-ubyte", np.arange(6) % 10),
        ("t10k-images-idx3-ubyte", gen.integers(0, 256, (4, 28, 28))),
        ("t10k-labels-idx1-ubyte", np.arange(4) % 10)):
      _write_idx(mirror / f"{stem}.gz", array)
      with gzip.open(mirror / f"{stem}.gz", "rb") as f:
        hashes[stem] = hashlib.sha256(f.read()).hexdigest()
    return f"file://{mirror}/", hashes

  def test_the_files_are_fetched_and_load(self, tmp_path):
    url, hashes = self._mirror(tmp_path)
    out = fashion_mnist.download(str(tmp_path / "data"),
                                 mirrors=("file:///nowhere/", url),
                                 content_sha256=hashes)
    images, labels = fashion_mnist.load("test", out)
    assert images.shape == (4, 28, 28) and labels.tolist() == [0, 1, 2, 3]

  def test_a_file_with_other_content_is_refused_and_not_kept(self, tmp_path):
    url, hashes = self._mirror(tmp_path)
    hashes["t10k-labels-idx1-ubyte"] = "0" * 64
    with pytest.raises(OSError, match=r"could not download "
                       r"t10k-labels-idx1-ubyte.gz: .*SHA-256"):
      fashion_mnist.download(str(tmp_path / "data"), mirrors=(url,),
                             content_sha256=hashes)
    assert sorted(os.listdir(tmp_path / "data")) == sorted(
        f"{s}.gz" for s in ("train-images-idx3-ubyte",
                            "train-labels-idx1-ubyte",
                            "t10k-images-idx3-ubyte"))

  def test_the_published_hashes_are_those_of_the_debian_files(self, tmp_path):
    if not os.path.isdir(fashion_mnist.DEBIAN_DIR):
      pytest.skip("the Debian package dataset-fashion-mnist is not installed")
    out = fashion_mnist.download(
        str(tmp_path / "data"), mirrors=(f"file://{fashion_mnist.DEBIAN_DIR}/",))
    assert len(os.listdir(out)) == 4
