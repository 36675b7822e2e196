"""The synthetic set on disk: ``images.npz``, an image folder and a grid.

``images.npz`` holds ``images`` ``[n, h, w, c]`` in ``[-1, 1]``, ``labels``
``[n]``, ``weights`` ``[n]`` and ``class_names``; ``folder/<class>/*.png``
with ``weights.csv`` is the same set as the image folder every peer reads;
``grid.png`` shows it one row per class.
"""

import collections
import csv
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from pqd_jax import visualize, workdir

__all__ = ["IMAGES", "folder_names", "grid_subset", "load_set", "save_set",
           "write_folder"]

IMAGES = "images.npz"
GRID_CLASSES = GRID_IMAGES = 10  # the grid's rows and columns at most
STUDENT_WEIGHTS = ("quantizer", "uniform")


def save_set(directory: str, images: np.ndarray, labels: np.ndarray,
             weights: np.ndarray, class_names: Sequence[str]) -> None:
  """Writes a set's ``images.npz``, ``folder/`` and ``grid.png``.

  Args:
    directory: the ``synthetic`` artefact.
    images: ``[n, h, w, c]`` in ``[-1, 1]``.
    labels: ``[n]`` class labels.
    weights: ``[n]`` per-image weights.
    class_names: names indexed by label.

  The grid shows a bounded subset, one row per class (:func:`grid_subset`).
  """
  workdir.write_npz(os.path.join(directory, IMAGES), images=images,
                    labels=labels, weights=weights,
                    class_names=np.array(class_names))
  write_folder(os.path.join(directory, "folder"), images, labels, weights,
               class_names)
  keep, rows = grid_subset(labels)
  grid = visualize.image_grid(images[keep], rows)
  workdir.save_atomic(os.path.join(directory, "grid.png"), grid.save)


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


def load_set(directory: str, weights: str = "quantizer"
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(images, labels, weights)`` of a synthetic artefact as students see it.

  Args:
    directory: a ``synthetic`` artefact (``images.npz``).
    weights: ``config.student.weights``: ``"quantizer"`` (the set's own
      weights) or ``"uniform"`` (ones).

  Raises:
    ValueError: for another ``weights``.
  """
  if weights not in STUDENT_WEIGHTS:
    raise ValueError(f"student.weights must be one of {STUDENT_WEIGHTS}, got "
                     f"{weights!r}.")
  with np.load(os.path.join(directory, IMAGES)) as s:
    images, labels, set_weights = s["images"], s["labels"], s["weights"]
  if weights == "uniform":
    set_weights = np.ones_like(set_weights)
  return images, labels, set_weights


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


def write_folder(root: str, images: np.ndarray, labels: np.ndarray,
                 weights: np.ndarray, class_names: Sequence[str]) -> None:
  """The set as ``<class>/<i>.png`` plus ``weights.csv``, atomically.

  ``<class>`` is :func:`folder_names`'s directory; ``weights.csv`` keeps the
  class name itself.
  """
  dirs = folder_names(class_names)
  with workdir.atomic_directory(root) as tmp:
    rows = []
    for i, (img, y, w) in enumerate(zip(images, labels, weights,
                                        strict=True)):
      name = os.path.join(dirs[y], f"{i:06d}.png")
      os.makedirs(os.path.join(tmp, dirs[y]), exist_ok=True)
      arr = ((img + 1.0) * 127.5).round().astype(np.uint8)
      Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(
          os.path.join(tmp, name))
      rows.append((name, class_names[y], int(y), float(w)))
    with open(os.path.join(tmp, "weights.csv"), "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(("file", "class", "label", "weight"))
      writer.writerows(rows)
