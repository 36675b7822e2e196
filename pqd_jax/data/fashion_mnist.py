"""Fashion-MNIST from its IDX files (the Debian package or any directory).

Looked up in this order: an explicit directory, ``$PQD_DATA_DIR``, then the
files of the Debian package ``dataset-fashion-mnist``. On a fresh online
machine (a Colab runtime), :func:`download` fetches them from the dataset's
own distribution, explicitly: nothing is downloaded unless asked.
"""

import gzip
import hashlib
import os
import urllib.request

import numpy as np

from pqd_jax import workdir

__all__ = ["CLASS_NAMES", "CONTENT_SHA256", "DEBIAN_DIR", "MIRRORS",
           "download", "find_dir", "load", "read_idx"]

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
    "Sneaker", "Bag", "Ankle boot",
)
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Where Zalando Research distributes the files (the dataset's README).
MIRRORS = (
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/"
    "fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
# SHA-256 of each file's uncompressed IDX content (the Debian package's
# files), so that a re-compressed copy is accepted and a damaged one is not.
CONTENT_SHA256 = {
    "train-images-idx3-ubyte":
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte":
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte":
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte":
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"),
               0x0E: np.dtype(">f8")}


_DAMAGED = (f"{workdir.DAMAGED} (the Debian package: `sudo apt-get install "
            "--reinstall dataset-fashion-mnist`)")
_HOW_TO = (
    "Install it with `sudo apt-get install dataset-fashion-mnist` (files in "
    "/usr/share/datasets/fashion-mnist), or point PQD_DATA_DIR (or "
    "--config.data_dir) at a directory holding train-images-idx3-ubyte.gz "
    "and the other three IDX files, or, online, let tfds fetch it (`pip "
    "install -e .[tf]`, then open_source(..., download=True) or `tfds build "
    "fashion_mnist --data_dir=<dir>`), or, online, "
    "`pqd_jax.data.fashion_mnist.download(<dir>)` and point PQD_DATA_DIR "
    "at <dir>."
)


def _resolve(directory: str, stem: str) -> str | None:
  for name in (stem + ".gz", stem):
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  return None


def find_dir(data_dir: str | None = None) -> str:
  """The first directory that holds the Fashion-MNIST IDX files.

  Args:
    data_dir: checked first when given (an error if it lacks the files).

  Returns:
    The directory.

  Raises:
    FileNotFoundError: with the ways to get the data when none has it.
  """
  stem = _FILES["train"][0]
  if data_dir:
    if _resolve(data_dir, stem) is None:
      raise FileNotFoundError(
          f"No Fashion-MNIST IDX files ({stem}[.gz]) in "
          f"data_dir={data_dir!r}. {_HOW_TO}")
    return data_dir
  candidates = [os.environ.get("PQD_DATA_DIR", ""), DEBIAN_DIR]
  for directory in candidates:
    if directory and _resolve(directory, stem) is not None:
      return directory
  raise FileNotFoundError(f"Fashion-MNIST not found. {_HOW_TO}")


def read_idx(path: str) -> np.ndarray:
  """Reads an IDX file (optionally gzipped) into a numpy array.

  Raises:
    pqd_jax.workdir.UnreadableFileError: (a ValueError) naming the file for
      one that is cut short, not gzip, or whose IDX header is invalid or
      does not match its payload size.
  """
  opener = gzip.open if path.endswith(".gz") else open
  with workdir.reading(path, _DAMAGED), opener(path, "rb") as f:
    raw = f.read()
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise workdir.UnreadableFileError(
        path, f"not an IDX file (bad magic {raw[:4]!r})", _DAMAGED)
  dtype = np.dtype(_IDX_DTYPES[raw[2]])
  ndim = raw[3]
  header = 4 + 4 * ndim
  shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big")
                for i in range(ndim))
  expected = int(np.prod(shape)) * dtype.itemsize
  if len(raw) < header or len(raw) - header != expected:
    raise workdir.UnreadableFileError(
        path, f"header says shape {shape} ({expected} bytes) but the file "
        f"holds {max(len(raw) - header, 0)} bytes of data", _DAMAGED)
  return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(
      dtype.newbyteorder("="))


def load(split: str = "train",
         data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Loads one split.

  Args:
    split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
    data_dir: optional directory with the IDX files.

  Returns:
    ``(images [n, 28, 28] uint8, labels [n] int32)``.

  Raises:
    ValueError: for an unknown split or inconsistent files
      (:class:`pqd_jax.workdir.UnreadableFileError` for a cut or corrupt
      one).
    FileNotFoundError: when the data is nowhere to be found.
  """
  if split not in _FILES:
    raise ValueError(f"Unknown split {split!r}; expected one of "
                     f"{tuple(_FILES)}.")
  directory = find_dir(data_dir)
  img_stem, lab_stem = _FILES[split]
  img_path, lab_path = (_resolve(directory, img_stem),
                        _resolve(directory, lab_stem))
  for stem, path in ((img_stem, img_path), (lab_stem, lab_path)):
    if path is None:
      raise FileNotFoundError(f"No {stem}[.gz] in {directory!r}. {_HOW_TO}")
  images = read_idx(img_path)
  if images.ndim != 3:
    raise workdir.UnreadableFileError(
        img_path, f"images of shape {images.shape}, not [n, 28, 28]", _DAMAGED)
  labels = read_idx(lab_path).astype(np.int32)
  if labels.shape != images.shape[:1]:
    raise workdir.UnreadableFileError(
        lab_path, f"labels of shape {labels.shape} for the {images.shape[0]} "
        f"images of {img_path}", _DAMAGED)
  return images, labels


def download(directory: str, *, mirrors: tuple[str, ...] = MIRRORS,
             content_sha256: dict[str, str] | None = None,
             timeout: float = 60.0) -> str:
  """Fetches the four IDX files into ``directory`` (online only).

  Files already there with the right content are kept. Each file is
  checked (its uncompressed content's SHA-256) before it is moved into
  place, so a cut or wrong download never stays.

  Args:
    directory: where the ``*.gz`` files go (created).
    mirrors: base URLs tried in turn (``file://`` works too).
    content_sha256: stem -> expected hash; default :data:`CONTENT_SHA256`.
    timeout: seconds per request.

  Returns:
    ``directory``, to hand to ``PQD_DATA_DIR`` or ``--config.data_dir``.

  Raises:
    OSError: when no mirror gives a file with the right content (each
      mirror's failure in the message).
  """
  expected = CONTENT_SHA256 if content_sha256 is None else content_sha256
  os.makedirs(directory, exist_ok=True)
  for stems in _FILES.values():
    for stem in stems:
      path = os.path.join(directory, stem + ".gz")
      if os.path.isfile(path) and _content_sha256(path) == expected[stem]:
        continue
      failures = []
      for base in mirrors:
        url = base + stem + ".gz"
        try:
          with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
          _write_checked(path, data, expected[stem])
          break
        except (OSError, ValueError) as e:
          failures.append(f"{url}: {e}")
      else:
        raise OSError(f"could not download {stem}.gz: " + "; ".join(failures))
  return directory


def _content_sha256(path: str) -> str | None:
  try:
    with gzip.open(path, "rb") as f:
      return hashlib.sha256(f.read()).hexdigest()
  except (OSError, EOFError):
    return None


def _write_checked(path: str, data: bytes, sha256: str) -> None:
  """``data`` to ``path`` if its content has ``sha256``; atomic."""
  tmp = f"{path}.{os.getpid()}.part"
  try:
    with open(tmp, "wb") as f:
      f.write(data)
    got = _content_sha256(tmp)
    if got != sha256:
      raise ValueError(f"its content's SHA-256 is {got}, expected {sha256}")
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
