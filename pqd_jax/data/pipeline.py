"""grain pipelines over image sources: batched records, per-class access.

Images come out as float32 in ``[-1, 1]`` (the autoencoder's range), shape
``[b, h, w, c]``, with int32 labels. Every pipeline is deterministic for its
seed: the same seed gives the same order and the same augmentations,
whatever the number of grain workers.
"""

from collections.abc import Callable
from typing import Any

import grain
import numpy as np

from pqd_jax import checks, sharding
from pqd_jax.data import sources

__all__ = [
    "batch_dataset",
    "class_indices",
    "lazy_batch",
    "record_dataset",
    "resize_images",
    "to_unit_range",
]


def to_unit_range(images: np.ndarray) -> np.ndarray:
  """uint8 ``[0, 255]`` → float32 ``[-1, 1]``."""
  return images.astype(np.float32) / 127.5 - 1.0


def resize_images(images: np.ndarray, size: int,
                  batch_size: int = 256) -> np.ndarray:
  """Resizes ``[n, h, w, c]`` float images to ``[n, size, size, c]``.

  Bilinear with antialiasing (as PIL's resize), a batch at a time so that
  large sets (ImageNet at 512²) never sit twice in memory.

  Raises:
    ValueError: for a non-positive size or images that are not ``[n, h, w,
      c]``.
  """
  import jax

  size = checks.integer("size", size)
  batch_size = checks.integer("batch_size", batch_size)
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"images must be [n, h, w, c], got shape "
                     f"{images.shape}.")
  n, h, w, c = images.shape
  if (h, w) == (size, size):
    return images
  out = np.empty((n, size, size, c), np.float32)
  for start in range(0, n, batch_size):
    chunk = images[start:start + batch_size]
    out[start:start + len(chunk)] = np.asarray(jax.image.resize(
        chunk.astype(np.float32), (len(chunk), size, size, c), "linear",
        antialias=True))
  return out


def class_indices(source: sources.ImageSource) -> list[np.ndarray]:
  """Indices of each class's records, ``result[label]`` in source order."""
  labels = source.labels
  order = np.argsort(labels, kind="stable")
  bounds = np.searchsorted(labels[order], np.arange(len(source.class_names)
                                                    + 1))
  return [order[bounds[c]:bounds[c + 1]] for c in range(len(bounds) - 1)]


def batch_dataset(
    source: sources.ImageSource,
    batch_size: int,
    *,
    seed: int = 0,
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    | None = None,
) -> grain.MapDataset:
  """Endless shuffled batches with random access: ``dataset[step]``.

  A fresh order every epoch; batch ``step`` is a pure function of ``seed``
  and ``step``, so a resumed training sees exactly the batches it would
  have seen.

  Args:
    source: the image source.
    batch_size: images per batch.
    seed: seed of the order and the augmentations.
    augment: optional per-record augmentation (see :func:`batches`).

  Returns:
    A ``grain.MapDataset`` of ``{"image", "label"}`` batches.
  """
  batch_size = checks.integer("batch_size", batch_size)
  seed = checks.integer("seed", seed, minimum=0)
  return record_dataset(source, seed=seed, augment=augment).batch(batch_size)


def record_dataset(
    source: sources.ImageSource,
    *,
    seed: int = 0,
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    | None = None,
) -> grain.MapDataset:
  """The endless shuffled records behind :func:`batch_dataset`.

  Batch ``s`` of ``batch_dataset(source, b, seed=seed)`` is records
  ``s * b`` to ``(s + 1) * b`` of this dataset (see :func:`lazy_batch`).

  Returns:
    A ``grain.MapDataset`` of ``{"image" [h, w, c] float32, "label"}``.
  """
  if len(source) == 0:
    raise ValueError("the source is empty.")
  ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None)
  if augment is not None:
    ds = ds.random_map(lambda rec, rng: (augment(rec[0], rng), rec[1]),
                       seed=seed)
  return ds.map(lambda rec: {"image": to_unit_range(rec[0]),
                             "label": np.int32(rec[1])})


def lazy_batch(records: grain.MapDataset, step: int, batch_size: int,
               image_shape: tuple[int, ...]) -> dict[str, Any]:
  """Batch ``step`` of ``records`` with rows read only when indexed.

  The same values as ``records.batch(batch_size)[step]``, as
  :class:`~pqd_jax.sharding.LazyRows` ``"image"`` and ``"label"`` entries
  (and ``"weight"`` ones): :func:`pqd_jax.sharding.shard_batch` then reads,
  in each process, only the records of its own devices. ``image_shape`` is
  the records' ``[h, w, c]``.
  """
  first = step * batch_size
  cache = {}  # the rows read, by range: each record is read once per batch

  def rows(start, stop):
    if (start, stop) not in cache:
      recs = [records[first + i] for i in range(start, stop)]
      cache[start, stop] = (np.stack([r["image"] for r in recs]),
                            np.asarray([r["label"] for r in recs], np.int32))
    return cache[start, stop]

  return {
      "image": sharding.LazyRows(lambda a, b: rows(a, b)[0],
                                 (batch_size, *image_shape), np.float32),
      "label": sharding.LazyRows(lambda a, b: rows(a, b)[1],
                                 (batch_size,), np.int32),
      "weight": np.ones(batch_size, np.float32),
  }
