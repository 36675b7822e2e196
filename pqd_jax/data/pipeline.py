"""grain pipelines over image sources: batched records, per-class access.

Images come out as float32 in ``[-1, 1]`` (the autoencoder's range), shape
``[b, h, w, c]``, with int32 labels. Every pipeline is deterministic for its
seed: the same seed gives the same order and the same augmentations,
whatever the number of grain workers.

**Reading ahead.** :func:`prefetch_batches` is the one way the encode step,
the teacher's training and the evaluation read a source: given the source
indices of each batch (:func:`split_batches` cuts an index list into
batches), ``num_workers`` grain worker processes decode and resize whole
batches (0: one thread of this process) while the device computes, and the
batches come back in order. A batch is the same whatever the worker count
(workers only change who decodes it), so results never depend on it. In a
multi-process run each process decodes only its devices' rows
(:func:`device_pieces`, :func:`process_rows`).
"""

from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import grain
import jax
import numpy as np

from pqd_jax import checks, sharding
from pqd_jax.data import sources

__all__ = [
    "Batch",
    "batch_dataset",
    "class_indices",
    "device_pieces",
    "lazy_batch",
    "prefetch_batches",
    "process_rows",
    "record_dataset",
    "resize_images",
    "split_batches",
    "to_unit_range",
    "unit_rows",
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


# ------------------------------------------------------------ read-ahead ---


def split_batches(indices: Sequence[int], batch_size: int) -> list[np.ndarray]:
  """``indices`` cut into consecutive batches of ``batch_size`` (last shorter).

  Raises:
    ValueError: for a batch_size < 1.
  """
  batch_size = checks.integer("batch_size", batch_size)
  indices = np.asarray(indices, np.int64).reshape(-1)
  return [indices[s:s + batch_size] for s in range(0, len(indices),
                                                   batch_size)]


def device_pieces(n: int, batch_size: int,
                  mesh: jax.sharding.Mesh | None = None
                  ) -> list[tuple[int, int, np.ndarray | None]]:
  """Each device's rows of each batch of :func:`pqd_jax.sharding.map_batches`.

  ``n`` rows in batches of ``batch_size`` (rounded up to the ``"data"``
  shards, at most ``n``), each split evenly over the shards. Read a piece
  at a time, the host holds a device's share of a batch per read.

  Returns:
    ``[(start, stop, rows)]`` per non-empty piece: ``rows`` None when a
    device of this process holds it, else empty (nothing to decode here).
  """
  mesh = sharding.data_mesh() if mesh is None else mesh
  shards = sharding.num_data_shards(mesh)
  size = -(-max(1, min(batch_size, n)) // shards) * shards
  mine = [d.process_index == jax.process_index() for d in mesh.devices.flat]
  per = size // shards
  return [(a + i * per, min(a + (i + 1) * per, n),
           None if mine[i] else np.zeros(0, np.int64))
          for a in range(0, n, size) for i in range(shards) if a + i * per < n]


def process_rows(m: int, size: int, mesh: jax.sharding.Mesh | None = None,
                 *, repeat_last: bool = False) -> np.ndarray | None:
  """The rows of an ``m``-row batch that this process's devices hold.

  The batch is laid over ``size`` rows (a multiple of the mesh's
  ``"data"`` shards, ``size >= m``) split evenly over the shards, as
  :func:`pqd_jax.sharding.map_batches` (rows past ``m`` are zeros, never
  read) or :func:`pqd_jax.sharding.shard_batch` (``repeat_last``: rows past
  ``m`` repeat row ``m - 1``) place it.

  Returns:
    The sorted row numbers in ``[0, m)``, or None when this process holds
    every device of the mesh (then it needs every row).
  """
  mesh = sharding.data_mesh() if mesh is None else mesh
  devices = list(mesh.devices.flat)
  local = [i for i, d in enumerate(devices)
           if d.process_index == jax.process_index()]
  if len(local) == len(devices):
    return None
  per = size // sharding.num_data_shards(mesh)
  rows = set()
  for i in local:
    rows.update(range(i * per, min((i + 1) * per, m)))
    if repeat_last and (i + 1) * per > m:
      rows.add(m - 1)
  return np.asarray(sorted(rows), np.int64)


class Batch(NamedTuple):
  """A batch of source records read by :func:`prefetch_batches`.

  Attributes:
    indices: ``[m]`` the records' source indices.
    labels: ``[m]`` int32 labels (from ``source.labels``: nothing decoded).
    positions: the rows that were decoded (sorted, in ``[0, m)``), or None
      for all of them.
    images: the decoded rows' images as the source returns them (uint8
      ``[k, h, w, c]``), None when no row was decoded.
  """

  indices: np.ndarray
  labels: np.ndarray
  positions: np.ndarray | None
  images: np.ndarray | None

  def unit_rows(self, source: sources.ImageSource, start: int,
                stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` as float32 in ``[-1, 1]``.

    A row that was not decoded (another process's, see
    :func:`process_rows`) is read from ``source`` here, so the values never
    depend on which rows were decoded ahead.
    """
    if self.positions is None:
      return to_unit_range(self.images[start:stop])
    want = np.arange(start, stop)
    where = np.searchsorted(self.positions, want)
    have = where < len(self.positions)
    have[have] = self.positions[where[have]] == want[have]
    if have.all():
      return to_unit_range(self.images[where])
    missing = to_unit_range(source.read(self.indices[want[~have]]))
    out = np.empty((stop - start, *missing.shape[1:]), np.float32)
    out[~have] = missing
    if have.any():
      out[have] = to_unit_range(self.images[where[have]])
    return out


def unit_rows(batches: Sequence[Batch], source: sources.ImageSource,
              image_shape: tuple[int, ...],
              size: int | None = None) -> sharding.LazyRows:
  """The rows of consecutive batches as one float32 ``[-1, 1]`` array.

  Converted when indexed (:class:`pqd_jax.sharding.LazyRows`): each process
  converts only its devices' rows.

  Args:
    batches: batches of :func:`prefetch_batches`, in order.
    source: their source (for rows not decoded ahead).
    image_shape: ``[h, w, c]`` of one image.
    size: total rows (default the batches' rows); rows past the batches are
      zeros.
  """
  starts = np.cumsum([0] + [len(b.indices) for b in batches])
  size = int(starts[-1]) if size is None else size

  def read(start, stop):
    parts = []
    for b, lo, hi in zip(batches, starts[:-1], starts[1:], strict=True):
      if lo < stop and start < hi:
        parts.append(b.unit_rows(source, max(start, lo) - lo,
                                 min(stop, hi) - lo))
    pad = stop - max(start, int(starts[-1]))
    parts.append(np.zeros((max(pad, 0), *image_shape), np.float32))
    return np.concatenate(parts)

  return sharding.LazyRows(read, (size, *image_shape), np.float32)


class _ReadBatch:
  """What a grain worker runs: batch ``k``'s rows read (decoded, resized)."""

  def __init__(self, source: sources.ImageSource, batches: Sequence[Any],
               rows: Callable[[int], np.ndarray | None] | None):
    self.source, self.batches, self.rows = source, batches, rows

  def __call__(self, k: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    indices = np.asarray(self.batches[k], np.int64)
    positions = None if self.rows is None else self.rows(k)
    chosen = indices if positions is None else indices[positions]
    # Record by record, as ImageSource.read: what a source counts as reads
    # (ArraySource.read does not call __getitem__) is what is decoded.
    return positions, (np.stack([self.source[int(i)][0] for i in chosen])
                       if len(chosen) else None)


def prefetch_batches(
    source: sources.ImageSource,
    batches: Sequence[Any],
    *,
    num_workers: int = 0,
    prefetch: int = 2,
    rows: Callable[[int], np.ndarray | None] | None = None,
) -> Iterator[Batch]:
  """The batches of ``source``, decoded ahead in grain workers, in order.

  Batch ``k`` holds the records ``batches[k]`` (source indices; e.g.
  :func:`split_batches` of an index list, or a lazy sequence). With
  ``num_workers`` > 0, grain worker processes (spawned on the first
  ``next``) each read whole batches (``source[i]``: decode and resize),
  batch ``k`` by worker ``k % num_workers``, ``prefetch`` batches ahead of
  the consumer; with 0 one thread of this process does it. Either way the
  host decodes the next batches while the device computes, and a batch is
  the same whatever ``num_workers``. Host memory holds up to about
  ``2 * prefetch * max(num_workers, 1)`` batches.

  Args:
    source: the image source (picklable: workers get a copy).
    batches: ``len`` and ``batches[k]`` -> the source indices of batch ``k``.
    num_workers: decoding processes; 0 decodes in this process.
    prefetch: batches read ahead per worker (>= 1).
    rows: ``k`` -> the rows of batch ``k`` to decode (:func:`process_rows`;
      None: all); the others are read on demand by :meth:`Batch.unit_rows`.

  Yields:
    A :class:`Batch` per entry of ``batches``. Close the generator (or
    exhaust it) to stop the workers.

  Raises:
    ValueError: for a negative num_workers or a prefetch < 1.
  """
  num_workers = checks.integer("num_workers", num_workers, minimum=0)
  prefetch = checks.integer("prefetch", prefetch)
  if len(batches) == 0:
    return
  ds = grain.MapDataset.range(len(batches)).map(_ReadBatch(source, batches,
                                                           rows))
  if num_workers:
    # A worker process reads its batches one after the other; its queue of
    # ``prefetch`` finished batches is what it reads ahead.
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=0,
                                              prefetch_buffer_size=0))
    from absl import flags  # grain reads them when it starts workers

    if not flags.FLAGS.is_parsed():  # not an absl app: tests, notebooks
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=min(num_workers, len(batches)),
        per_worker_buffer_size=prefetch))
  else:  # one background thread: decode overlaps the consumer here too
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1,
                                              prefetch_buffer_size=prefetch))
  it = iter(ds)
  try:
    for k, (positions, images) in enumerate(it):
      indices = np.asarray(batches[k], np.int64)
      yield Batch(indices, source.labels[indices].astype(np.int32),
                  positions, None if images is None else np.asarray(images))
  finally:  # stops the workers (grain: don't leave it to the GC)
    getattr(it, "close", lambda: None)()

