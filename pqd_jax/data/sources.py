"""Random-access image sources: Fashion-MNIST, image folders, tfds by name.

Every source is indexable (``source[i] -> (image [h, w, c] uint8, label)``),
has a length, the class names in label order (``class_names[label]``) and
the labels of all records (``source.labels``), which is what per-class
quantization needs. Wrong class order is the most common reproduction
failure in the peers' trackers, so the names always travel with the data.

``open_source("fashion_mnist" | "folder:<root>" | "<tfds name>", split)``
picks the source.
"""

import hashlib
import os
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image

from pqd_jax import checks, workdir
from pqd_jax.data import fashion_mnist, transforms

__all__ = [
    "IMAGE_EXTENSIONS",
    "ArraySource",
    "FolderSource",
    "ImageSource",
    "TfdsSource",
    "open_source",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


class ImageSource:
  """Base class: a labelled, random-access image collection.

  Attributes:
    class_names: names of the classes, indexed by label.
    labels: ``[n]`` int32 label of every record.
  """

  class_names: tuple[str, ...]
  labels: np.ndarray

  def __len__(self) -> int:
    return int(self.labels.shape[0])

  def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
    raise NotImplementedError

  def read(self, indices: Sequence[int] | None = None) -> np.ndarray:
    """Reads the images at ``indices`` (default all) as ``[m, h, w, c]``."""
    if indices is None:
      indices = range(len(self))
    return np.stack([self[int(i)][0] for i in indices])

  def fingerprint(self) -> str:
    """A hash of the records that changes when the data changes.

    Class names, labels and the stored data (its bytes, or for files their
    names, sizes and modification times): cheap enough for ImageNet.
    """
    h = hashlib.sha256()
    h.update(repr(self.class_names).encode())
    h.update(np.ascontiguousarray(self.labels, np.int32).tobytes())
    for part in self._stored():
      h.update(part)
    return h.hexdigest()[:16]

  def _stored(self) -> Iterable[bytes]:
    """What identifies the stored images, for :meth:`fingerprint`."""
    raise NotImplementedError


def _file_stats(paths: Iterable[str], root: str) -> Iterable[bytes]:
  for path in paths:
    st = os.stat(path)
    yield f"{os.path.relpath(path, root)}:{st.st_size}:{st.st_mtime_ns}\n" \
        .encode()


def _check_index(index: int, n: int) -> int:
  if not -n <= index < n:
    raise IndexError(f"index {index} out of range for a source of {n}.")
  return index % n


class ArraySource(ImageSource):
  """Images already in memory.

  Args:
    images: ``[n, h, w]`` or ``[n, h, w, c]`` uint8.
    labels: ``[n]`` integer labels in ``[0, len(class_names))``.
    class_names: names indexed by label.
  """

  def __init__(self, images: np.ndarray, labels: np.ndarray,
               class_names: Sequence[str]):
    images = np.asarray(images)
    if images.ndim == 3:
      images = images[..., None]
    if images.ndim != 4 or images.dtype != np.uint8:
      raise ValueError(
          "images must be uint8 of shape [n, h, w] or [n, h, w, c], got "
          f"{images.dtype} {images.shape}."
      )
    labels = np.asarray(labels)
    if labels.shape != (images.shape[0],):
      raise ValueError(f"labels must have shape [{images.shape[0]}], got "
                       f"{labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(f"labels must be integers, got dtype {labels.dtype}.")
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
      raise ValueError(
          f"labels must be in [0, {len(class_names)}), got "
          f"[{labels.min()}, {labels.max()}]."
      )
    self.images = images
    self.labels = labels.astype(np.int32)
    self.class_names = tuple(class_names)

  def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
    i = _check_index(index, len(self))
    return self.images[i], int(self.labels[i])

  def read(self, indices: Sequence[int] | None = None) -> np.ndarray:
    """Images at ``indices`` (default all), ``[m, h, w, c]``, no copy."""
    if indices is None:
      return self.images
    return self.images[np.asarray(indices)]

  def _stored(self) -> Iterable[bytes]:
    yield repr(self.images.shape).encode()
    yield np.ascontiguousarray(self.images).data


def _convert(image: Image.Image, image_size: int | None,
             channels: int | None, crop: float = 0.0) -> np.ndarray:
  if channels == 1:
    image = image.convert("L")
  elif channels == 3 or image.mode not in ("L", "RGB"):
    image = image.convert("RGB")
  if image_size is not None:
    image = transforms.resize(image, image_size, crop)
  arr = np.asarray(image, np.uint8)
  return arr[..., None] if arr.ndim == 2 else arr


class FolderSource(ImageSource):
  """An image folder ``root/<split>/<class>/*.png|jpg``.

  Class names are the sub-folder names in sorted order (label = position).
  Images are decoded lazily, converted to ``channels`` and resized to
  ``image_size`` × ``image_size``.

  Args:
    root: the folder holding one directory per split.
    split: e.g. ``"train"`` or ``"test"``.
    image_size: output side length; None keeps the stored size (then all
      images must share it).
    channels: 1 (grayscale) or 3 (RGB); None keeps grayscale files
      grayscale and turns everything else into RGB.
    crop: 0 squashes to ``image_size``; ``0 < crop <= 1`` resizes the
      short side to ``image_size / crop`` and centre-crops
      (:func:`pqd_jax.data.transforms.resize`).
  """

  def __init__(self, root: str, split: str, *, image_size: int | None = None,
               channels: int | None = None, crop: float = 0.0):
    if channels not in (None, 1, 3):
      raise ValueError(f"channels must be 1, 3 or None, got {channels!r}.")
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
      raise FileNotFoundError(
          f"Image folder {root!r} has no {split!r} split: expected "
          f"{split_dir}/<class>/*.png|jpg."
      )
    # Hidden directories (.ipynb_checkpoints, ...) are not classes.
    names = sorted(e.name for e in os.scandir(split_dir)
                   if e.is_dir() and not e.name.startswith("."))
    files, labels = [], []
    for label, name in enumerate(names):
      class_dir = os.path.join(split_dir, name)
      for f in sorted(os.listdir(class_dir)):
        if f.lower().endswith(IMAGE_EXTENSIONS):
          files.append(os.path.join(class_dir, f))
          labels.append(label)
    if not files:
      loose = [f for f in os.listdir(split_dir)
               if f.lower().endswith(IMAGE_EXTENSIONS)]
      if loose:
        raise FileNotFoundError(
            f"{split_dir} holds {len(loose)} images but no class folders: "
            f"an image folder keeps each class's images in its own "
            f"directory, {split_dir}/<class>/<image>.")
      raise FileNotFoundError(
          f"No images ({', '.join(IMAGE_EXTENSIONS)}) under "
          f"{split_dir}/<class>/."
      )
    self.files = files
    self.split_dir = split_dir
    self.labels = np.asarray(labels, np.int32)
    self.class_names = tuple(names)
    self.image_size = image_size
    self.channels = channels
    self.crop = crop

  def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
    i = _check_index(index, len(self))
    # PIL's PNG reader raises SyntaxError for a broken chunk.
    with workdir.reading(self.files[i], workdir.DAMAGED, also=(SyntaxError,)):
      with Image.open(self.files[i]) as image:
        arr = _convert(image, self.image_size, self.channels, self.crop)
    return arr, int(self.labels[i])

  def _stored(self) -> Iterable[bytes]:
    return _file_stats(self.files, self.split_dir)


class TfdsSource(ImageSource):
  """A prepared tfds dataset read through ``tfds.data_source`` (array_record).

  Needs no TensorFlow. The dataset must already be prepared in ``data_dir``
  (for ``imagenet2012``: `tfds build imagenet2012 --manual_dir=...` with the
  ``tf`` extra, or any array_record copy).

  Args:
    name: tfds name, e.g. ``"imagenette"``, ``"cifar10"``.
    split: tfds split, e.g. ``"train"``.
    data_dir: tfds data directory (default tfds's).
    image_size: output side length (resized with PIL); None keeps it.
    channels: 1, 3 or None as in :class:`FolderSource`.
    image_key: feature holding the image.
    label_key: feature holding the label.
    download: download and prepare (array_record) when not prepared yet;
      needs the network and, for most datasets, the ``tf`` extra.
    label_cache: a directory where the labels are kept after the first
      scan, keyed by the split's shards (names, sizes, times): the next
      opening reads one small file instead of every record.
  """

  def __init__(self, name: str, split: str, *, data_dir: str | None = None,
               image_size: int | None = None, channels: int | None = None,
               image_key: str = "image", label_key: str = "label",
               download: bool = False, label_cache: str | None = None,
               crop: float = 0.0):
    import tensorflow_datasets as tfds  # heavy; only on this path

    try:
      builder = tfds.builder(name, data_dir=data_dir,
                             file_format="array_record")
    except tfds.core.DatasetNotFoundError:
      raise ValueError(
          f"Unknown dataset {name!r}: expected 'fashion_mnist', "
          "'folder:<root>' or the name of a tfds dataset."
      ) from None
    try:
      if download:
        builder.download_and_prepare()
      source = builder.as_data_source(split=split)
    except Exception as e:  # tfds raises many types for "not prepared"
      raise FileNotFoundError(
          f"tfds dataset {name!r} (split {split!r}) is not prepared in "
          f"data_dir={data_dir!r}: {e}"
      ) from e
    feature = builder.info.features[label_key]
    self.class_names = tuple(getattr(feature, "names", None)
                             or [str(i) for i in range(feature.num_classes)])
    self._source = source
    # The split's shards (``<name>-<split>.array_record-…``); all files for
    # a sliced split such as ``train[:10%]``. epath: data_dir may be on GCS.
    from etils import epath

    stored = sorted(p for p in epath.Path(builder.data_dir).iterdir()
                    if p.is_file())
    self.files = [p for p in stored if f"-{split}." in p.name] or stored
    if not any(".array_record" in p.name for p in self.files):
      raise FileNotFoundError(
          f"tfds dataset {name!r} in {builder.data_dir} has no array_record "
          f"shards for split {split!r}"
          + (" (it is prepared as tfrecord)"
             if any(".tfrecord" in p.name for p in stored) else "")
          + "; pqd_jax reads array_record (random access without "
          f"TensorFlow): rebuild it with `tfds build {name} "
          "--file_format=array_record` (ImageNet: add --manual_dir=<the "
          "tars>).")
    self._name, self._version = name, str(builder.version)
    self._image_key = image_key
    self._label_key = label_key
    self.image_size = image_size
    self.channels = channels
    self.crop = crop
    self.labels = self._scan_labels(builder, split, label_cache)

  def _scan_labels(self, builder, split: str,
                   cache: str | None) -> np.ndarray:
    """Every record's label, without decoding an image; cached if asked."""
    import tensorflow_datasets as tfds

    path = None
    if cache:
      key = hashlib.sha256(b"".join(self._stored())).hexdigest()[:16]
      path = os.path.join(cache, f"{self._name}-{split}-labels-{key}.npy")
      try:
        return np.load(path)
      except (OSError, ValueError, EOFError):
        pass  # not there yet, or damaged: scanned and written again below
    # The labels without decoding a single image (ImageNet: 1.28 M JPEGs).
    undecoded = builder.as_data_source(
        split=split, decoders={self._image_key: tfds.decode.SkipDecoding()})
    labels = np.asarray(
        [int(undecoded[i][self._label_key]) for i in range(len(undecoded))],
        np.int32)
    if path:
      os.makedirs(cache, exist_ok=True)
      workdir.save_atomic(path, lambda tmp: np.save(tmp, labels))
    return labels

  def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
    i = _check_index(index, len(self))
    record = self._source[i]
    image = np.asarray(record[self._image_key])
    if self.image_size is not None or self.channels is not None:
      pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
      image = _convert(pil, self.image_size, self.channels, self.crop)
    elif image.ndim == 2:
      image = image[..., None]
    return image, int(record[self._label_key])

  def _stored(self) -> Iterable[bytes]:
    yield f"{self._name}:{self._version}\n".encode()
    for path in self.files:
      st = path.stat()
      yield f"{path.name}:{st.length}:{st.mtime}\n".encode()


def open_source(dataset: str, split: str, *, data_dir: str | None = None,
                image_size: int | None = None, channels: int | None = None,
                download: bool = False, label_cache: str | None = None,
                crop: float = 0.0) -> ImageSource:
  """Opens a dataset split by name.

  Args:
    dataset: ``"fashion_mnist"`` (IDX files: ``data_dir``,
      ``$PQD_DATA_DIR``, the Debian package, then tfds ``fashion_mnist`` in
      ``data_dir``), ``"folder:<root>"`` (an image folder) or the name of a
      prepared tfds dataset.
    split: ``"train"`` or ``"test"`` (or any tfds split).
    data_dir: where to look (see above).
    image_size: resize to this side length (folder and tfds sources).
    channels: 1 or 3 (folder and tfds sources).
    download: let tfds download and prepare the dataset when it is not
      prepared (online only; off by default so that an offline run fails at
      once instead of retrying the network).
    label_cache: where a tfds source keeps its scanned labels
      (:class:`TfdsSource`).
    crop: how images reach ``image_size``: 0 squashes, ``0 < crop <= 1``
      resizes the short side to ``image_size / crop`` and centre-crops
      (0.875: SRe2L's evaluation transform).

  Returns:
    An :class:`ImageSource`.

  Raises:
    ValueError: for an empty or unknown dataset name, an image_size < 1 or
      channels other than 1, 3 or None.
    FileNotFoundError: when the data cannot be found, saying how to get it.
  """
  if not isinstance(dataset, str) or not dataset:
    raise ValueError("dataset must be 'fashion_mnist', 'folder:<root>' or a "
                     f"tfds name, got {dataset!r}.")
  if image_size is not None:
    checks.integer("image_size", image_size)
  if channels not in (None, 1, 3):
    raise ValueError(f"channels must be 1, 3 or None, got {channels!r}.")
  if dataset.startswith("folder:"):
    return FolderSource(dataset[len("folder:"):], split,
                        image_size=image_size, channels=channels, crop=crop)
  if dataset == "fashion_mnist":
    try:
      images, labels = fashion_mnist.load(split, data_dir)
    except FileNotFoundError as idx_error:
      try:
        return TfdsSource("fashion_mnist", split, data_dir=data_dir,
                          image_size=image_size, channels=channels,
                          download=download, label_cache=label_cache,
                          crop=crop)
      except FileNotFoundError:
        raise idx_error from None
    if image_size not in (None, images.shape[1]) or channels == 3 or crop:
      images = np.stack([
          _convert(Image.fromarray(im), image_size, channels, crop)
          for im in images])
    return ArraySource(images, labels, fashion_mnist.CLASS_NAMES)
  return TfdsSource(dataset, split, data_dir=data_dir, image_size=image_size,
                    channels=channels, download=download,
                    label_cache=label_cache, crop=crop)

