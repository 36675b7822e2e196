"""The synthetic set on disk: written a class at a time, read lazily.

A ``synthetic`` artefact holds

- ``shards/<label>.npy``: uint8 ``[k, h, w, c]`` images of one class at the
  classifiers' resolution;
- ``folder/<class>/<i>.png`` and ``folder/weights.csv``: the same set as the
  image folder every peer reads;
- ``set.npz``, written last: ``labels`` ``[n]``, ``weights`` ``[n]``
  (``[n, factor²]`` with parameterised storage: one per tile),
  ``class_names``, ``factor``, and per shard its ``classes`` and
  ``counts``;
- ``grid.png``: a bounded subset, one row per class.

Image ``i`` of the set is row ``i`` of the shards taken in ``classes``
order. With parameterised storage (``factor > 1``,
:mod:`pqd_jax.data.formation`) each stored image is a mosaic of
``factor²`` images at ``1 / factor`` of the side, which students train on
as separate images.

Nothing holds the whole set as floats: a writer converts each class to
uint8 as it comes (:class:`SetWriter`), and students read the rows of each
batch from the shards (:func:`load_set`), so host memory does not grow with
the number of classes.
"""

import collections
import csv
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from pqd_jax import sharding, visualize, workdir
from pqd_jax.data import formation

__all__ = ["SET", "SHARDS", "SetWriter", "folder_names", "grid_subset",
           "load_set", "problem", "save_set", "to_uint8"]

SET = "set.npz"
SHARDS = "shards"
GRID_CLASSES = GRID_IMAGES = 10  # the grid's rows and columns at most
STUDENT_WEIGHTS = ("quantizer", "uniform")


def to_uint8(images: np.ndarray) -> np.ndarray:
  """Float images in ``[-1, 1]`` (clipped) to uint8; uint8 passes through."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images
  return ((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).round().astype(np.uint8)


def _shard(directory: str, label: int) -> str:
  return os.path.join(directory, SHARDS, f"{int(label):05d}.npy")


class SetWriter:
  """Writes a synthetic set one class at a time; a killed run resumes.

  Call :meth:`write_class` for each class in the set's order (classes whose
  :meth:`finished` is true may be skipped), then :meth:`finish`.

  Args:
    directory: the ``synthetic`` artefact.
    class_names: names indexed by label.
    image_shape: ``(h, w, c)`` stored; float images of another square size
      are resized to it (bilinear, antialiased) before the uint8 conversion.
    factor: parameterised storage: a class's images are resized to ``h /
      factor`` and stored ``factor²`` to a mosaic
      (:func:`pqd_jax.data.formation.tile`); 1 stores them as they are.
  """

  def __init__(self, directory: str, class_names: Sequence[str],
               image_shape: Sequence[int], factor: int = 1):
    self.directory = directory
    self.class_names = [str(n) for n in class_names]
    self.image_shape = tuple(int(s) for s in image_shape)
    self.factor = int(factor)
    if self.factor not in formation.FACTORS or self.image_shape[0] % factor:
      raise ValueError(f"factor {factor!r} must be one of "
                       f"{formation.FACTORS} and divide the side of "
                       f"{self.image_shape}.")
    self._dirs = folder_names(self.class_names)
    os.makedirs(os.path.join(directory, SHARDS), exist_ok=True)

  def finished(self, label: int, count: int) -> bool:
    """Whether class ``label``'s shard holds ``count`` stored images."""
    try:
      layout = workdir.array_layout(_shard(self.directory, label))
    except ValueError:
      return False
    return layout.shape == (count, *self.image_shape)

  def write_class(self, label: int, images: np.ndarray, first: int) -> None:
    """Writes class ``label``: its folder images, then its shard.

    Args:
      label: the class.
      images: ``[k · factor², h, w, c]`` float in ``[-1, 1]``, or uint8 at
        the stored (tile) size; ``factor²`` consecutive ones make a mosaic.
      first: the set index of its first stored image (the folder's file
        names).

    Raises:
      ValueError: for images whose channels or (uint8) size differ from
        ``image_shape``.
    """
    images = np.asarray(images)
    h, w, c = self.image_shape
    h, w = h // self.factor, w // self.factor  # a tile's
    if images.ndim != 4 or images.shape[-1] != c:
      raise ValueError(f"class {label}: images must be [k, h, w, {c}], got "
                       f"shape {images.shape}.")
    if images.shape[1:3] != (h, w):
      if images.dtype == np.uint8 or h != w:
        raise ValueError(f"class {label}: images of shape {images.shape[1:]} "
                         f"cannot be stored as {self.image_shape}.")
      from pqd_jax.data import pipeline as data_pipeline

      images = data_pipeline.resize_images(images.astype(np.float32), h)
    images = formation.tile(to_uint8(images), self.factor)
    name = self._dirs[label]
    with workdir.atomic_directory(
        os.path.join(self.directory, "folder", name)) as tmp:
      for j, img in enumerate(images):
        Image.fromarray(img[..., 0] if c == 1 else img).save(
            os.path.join(tmp, f"{first + j:06d}.png"))
    workdir.write_npy(_shard(self.directory, label), images)

  def finish(self, labels: np.ndarray, weights: np.ndarray) -> None:
    """Writes ``weights.csv``, ``set.npz`` and ``grid.png``.

    Args:
      labels: ``[n]`` class of each stored image, each class's images
        contiguous, as written.
      weights: ``[n]`` per-image weights; ``[n, factor²]`` (a weight per
        tile) with parameterised storage.

    Raises:
      ValueError: when a class's images are not contiguous, a shard does
        not hold its class's count, or the weights' shape is not the set's.
    """
    labels = np.asarray(labels, np.int32)
    weights = np.asarray(weights, np.float32)
    tiles = self.factor * self.factor
    if weights.shape != ((len(labels),) if tiles == 1
                         else (len(labels), tiles)):
      raise ValueError(f"weights of shape {weights.shape} for {len(labels)} "
                       f"stored images of {tiles} tile(s).")
    classes, counts = _runs(labels)
    for label, count in zip(classes, counts, strict=True):
      if not self.finished(label, count):
        raise ValueError(f"class {label}'s shard does not hold its {count} "
                         "images; write it first.")
    per_tile = weights.reshape(len(labels), -1)
    rows = [(os.path.join(self._dirs[y], f"{i:06d}.png"),
             self.class_names[y], int(y), *map(float, w))
            for i, (y, w) in enumerate(zip(labels, per_tile, strict=True))]
    header = ("weight",) if tiles == 1 else tuple(
        f"weight_tile{t}" for t in range(tiles))

    def write_csv(tmp):
      with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("file", "class", "label") + header)
        writer.writerows(rows)

    workdir.save_atomic(os.path.join(self.directory, "folder", "weights.csv"),
                        write_csv)
    workdir.write_npz(os.path.join(self.directory, SET), labels=labels,
                      weights=weights, class_names=np.array(self.class_names),
                      factor=np.int64(self.factor),
                      classes=classes, counts=counts,
                      image_shape=np.array(self.image_shape, np.int64))
    images, labels, _ = load_set(self.directory)
    keep, grid_rows = grid_subset(labels)
    grid = visualize.image_grid(images.take(keep), grid_rows)
    workdir.save_atomic(os.path.join(self.directory, "grid.png"), grid.save)


def _runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """``(classes, counts)`` of the runs of equal labels; each class once."""
  if labels.size == 0:
    raise ValueError("a synthetic set needs at least one image.")
  edges = np.flatnonzero(np.diff(labels)) + 1
  starts = np.concatenate([[0], edges])
  classes = labels[starts]
  if len(np.unique(classes)) != len(classes):
    raise ValueError("each class's images must be contiguous in the set; "
                     f"got the class order {classes[:10].tolist()}...")
  counts = np.diff(np.concatenate([starts, [labels.size]]))
  return classes.astype(np.int32), counts.astype(np.int64)


def save_set(directory: str, images: np.ndarray, labels: np.ndarray,
             weights: np.ndarray, class_names: Sequence[str]) -> None:
  """Writes a set held in memory (shards, folder, ``set.npz``, grid).

  Args:
    directory: the ``synthetic`` artefact.
    images: ``[n, h, w, c]`` in ``[-1, 1]`` (or uint8).
    labels: ``[n]`` class labels, each class's images contiguous.
    weights: ``[n]`` per-image weights.
    class_names: names indexed by label.
  """
  images, labels = np.asarray(images), np.asarray(labels, np.int32)
  writer = SetWriter(directory, class_names, images.shape[1:])
  classes, counts = _runs(labels)
  first = 0
  for label, count in zip(classes, counts, strict=True):
    writer.write_class(int(label), images[first:first + count], first)
    first += count
  writer.finish(labels, weights)


def grid_subset(labels: np.ndarray, max_classes: int = GRID_CLASSES,
                max_images: int = GRID_IMAGES) -> tuple[np.ndarray, int]:
  """Which images the grid shows: a bounded subset, one row per class.

  The first ``max_classes`` classes of the set, each with as many of its
  first images as every one of them has (at most ``max_images``), so the
  grid stays a small PNG at ImageNet's 1,000 classes and IPC 50.

  Returns:
    ``(indices, rows)``: the images in row order and the number of rows.
  """
  labels = np.asarray(labels)
  classes = list(dict.fromkeys(labels.tolist()))[:max_classes]
  members = [np.flatnonzero(labels == c) for c in classes]
  cols = min(max_images, *(len(m) for m in members))
  return np.concatenate([m[:cols] for m in members]), len(classes)


def _layout(directory: str, label: int, count: int, shape: tuple[int, ...],
            advice: str) -> workdir.ArrayLayout:
  """Class ``label``'s shard, which must hold ``count`` images of ``shape``."""
  path = _shard(directory, label)
  layout = workdir.array_layout(path, advice=advice)
  if layout.shape != (int(count), *shape):
    raise workdir.UnreadableFileError(
        path, f"it holds {layout.shape}, {SET} says {(int(count), *shape)}",
        advice)
  return layout


def problem(directory: str) -> str:
  """Why a ``synthetic`` artefact is incomplete (``""`` when it is whole).

  ``set.npz`` must read back and every shard hold its class's count of
  images at the set's shape; only headers are read.
  """
  try:
    s = workdir.read_npz(os.path.join(directory, SET),
                         ("classes", "counts", "image_shape"))
  except workdir.UnreadableFileError as e:
    return f"{SET} does not read back ({e.reason})"
  except OSError as e:
    return f"{SET} does not read back ({e})"
  classes, counts = s["classes"], s["counts"]
  shape = tuple(int(v) for v in s["image_shape"])
  for label, count in zip(classes, counts, strict=True):
    try:
      _layout(directory, label, count, shape, "")
    except workdir.UnreadableFileError as e:
      return f"{e.path}: {e.reason}"
    except ValueError as e:
      return str(e)
  return ""


def load_set(directory: str, weights: str = "quantizer"
             ) -> tuple[sharding.LazyRows, np.ndarray, np.ndarray]:
  """``(images, labels, weights)`` of a synthetic artefact as students see it.

  Args:
    directory: a ``synthetic`` artefact.
    weights: ``config.student.weights``: ``"quantizer"`` (the set's own
      weights) or ``"uniform"`` (ones).

  Returns:
    ``images`` ``[n, h, w, c]`` float32 in ``[-1, 1]`` as
    :class:`pqd_jax.sharding.LazyRows`: rows are read from the shards when
    taken (``images.take(indices)``), so only a batch is in memory;
    ``labels`` ``[n]`` int32 and ``weights`` ``[n]`` float32.

  Raises:
    ValueError: for another ``weights``, an artefact without ``set.npz``,
      or (:class:`pqd_jax.workdir.UnreadableFileError`, naming the file)
      a ``set.npz`` or a shard that is cut short, corrupt or holds another
      count than the set says.
  """
  if weights not in STUDENT_WEIGHTS:
    raise ValueError(f"student.weights must be one of {STUDENT_WEIGHTS}, got "
                     f"{weights!r}.")
  path = os.path.join(directory, SET)
  if not os.path.isfile(path):
    raise ValueError(f"{directory} is not a synthetic set: it has no {SET}.")
  advice = workdir.remake(directory)
  s = workdir.read_npz(path, ("labels", "weights", "classes", "counts",
                              "image_shape"), advice)
  labels, set_weights = s["labels"], s["weights"]
  classes, counts = s["classes"], s["counts"]
  shape = tuple(int(v) for v in s["image_shape"])
  if weights == "uniform":
    set_weights = np.ones_like(set_weights)
  starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
  layouts = {}

  def read(start: int, stop: int) -> np.ndarray:
    parts = []
    first = int(np.searchsorted(starts, start, side="right")) - 1
    for i in range(max(first, 0), len(classes)):
      if starts[i] >= stop:
        break
      if i not in layouts:
        layouts[i] = _layout(directory, classes[i], counts[i], shape, advice)
      lo, hi = max(start, starts[i]), min(stop, starts[i + 1])
      parts.append(workdir.read_rows(layouts[i], lo - starts[i],
                                     hi - starts[i], advice=advice))
    rows = (np.concatenate(parts) if parts
            else np.zeros((0, *shape), np.uint8))
    return rows.astype(np.float32) / 127.5 - 1.0

  images = sharding.LazyRows(read, (int(starts[-1]), *shape), np.float32)
  return images, labels.astype(np.int32), set_weights.astype(np.float32)


def folder_names(class_names: Sequence[str]) -> list[str]:
  """One directory name per class: the class name made safe for a path.

  Path separators become ``_`` (Fashion-MNIST's ``"T-shirt/top"`` would
  otherwise nest a directory), an empty or dot-only name becomes
  ``class_<label>``, and a name that two classes would share gets its
  label appended, so every class has its own directory.
  """
  names = []
  for label, name in enumerate(class_names):
    safe = str(name).replace("/", "_").replace("\\", "_")
    if not safe.strip("."):
      safe = f"class_{label}"
    names.append(safe)
  counts = collections.Counter(names)
  out, used = [], set()
  for label, name in enumerate(names):
    unique = name if counts[name] == 1 else f"{name}_{label}"
    while unique in used:
      unique += f"_{label}"
    used.add(unique)
    out.append(unique)
  return out

