"""Encoded latents stored per class on disk, streamable by CLVQ.

Layout of a latents directory::

  index.json           class names, latent shape, dtype, count per class,
                       scaling factor
  class_00000.npy      [n_0, *latent_shape] (float16 or float32)
  class_00001.npy      ...

Each class file is written to a temporary name and renamed, and
``index.json`` is written last, so a directory with an index is complete; a
killed run leaves no index and is redone. :func:`stream` yields the files in
chunks (read in place, :func:`pqd_jax.workdir.read_rows`), so memory stays
bounded by the chunk size whatever the dataset size. The readers check each
class file's header against the index: a file cut short or of another count
or dtype is an error.
"""

import functools
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from pqd_jax import checks, distributed, sharding, workdir
from pqd_jax.autoencoder import model as model_lib
from pqd_jax.data import pipeline, sources

__all__ = ["CHUNK_BYTES", "encode_source", "exists", "load", "problem",
           "read_index", "save", "stream"]

_INDEX = "index.json"
DTYPES = ("float16", "float32")  # on disk


def _class_file(directory: str, label: int) -> str:
  return os.path.join(directory, f"class_{label:05d}.npy")


def exists(directory: str) -> bool:
  """Whether ``directory`` holds a complete latents artefact."""
  return os.path.isfile(os.path.join(directory, _INDEX))


def read_index(directory: str) -> dict:
  """The artefact's index (class names, shape, dtype, counts, scaling).

  Raises FileNotFoundError when there is none, and
  :class:`pqd_jax.workdir.UnreadableFileError` when it is cut or corrupt.
  """
  path = os.path.join(directory, _INDEX)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No complete latents artefact in {directory!r} "
                            f"(missing {_INDEX}).")
  with workdir.reading(path, workdir.remake(directory), also=(TypeError,)):
    with open(path, "rb") as f:
      index = json.load(f)
    # The fields the readers use, of the types they use them as.
    index["counts"] = [int(n) for n in index["counts"]]
    index["latent_shape"] = [int(n) for n in index["latent_shape"]]
    np.dtype(index["dtype"])
  return index


def _layouts(directory: str, index: dict, classes: Sequence[int] | None = None
             ) -> dict[int, workdir.ArrayLayout]:
  """Each class file's layout, checked against the index.

  A file missing, cut short, corrupt, or of another count, shape or dtype
  than the index says raises :class:`pqd_jax.workdir.UnreadableFileError`.
  """
  counts, shape = index["counts"], tuple(index["latent_shape"])
  dtype = np.dtype(index["dtype"])
  advice = workdir.remake(directory)
  layouts = {}
  for c in range(len(counts)) if classes is None else classes:
    path = _class_file(directory, c)
    layout = workdir.array_layout(path, advice=advice)
    if layout.shape != (counts[c], *shape) or layout.dtype != dtype:
      raise workdir.UnreadableFileError(
          path, f"it holds {layout.shape[0]} {layout.dtype} latents of shape "
          f"{layout.shape[1:]}, {_INDEX} counts {counts[c]} {dtype} of shape "
          f"{shape}", advice)
    layouts[c] = layout
  return layouts


def encode_source(
    ae: model_lib.Autoencoder,
    source: sources.ImageSource,
    directory: str,
    *,
    dtype: str = "float16",
    sample: bool = False,
    rng: jax.Array | None = None,
    batch_size: int = 256,
    progress: bool = True,
    num_workers: int = 0,
    prefetch: int = 2,
) -> dict:
  """Encodes every image of ``source`` and writes one file per class.

  Args:
    ae: the autoencoder.
    source: the images (any :class:`~pqd_jax.data.sources.ImageSource`).
    directory: output directory (created).
    dtype: ``"float16"`` (half the disk) or ``"float32"``.
    sample: posterior samples instead of means.
    rng: key for the samples (class ``c`` uses ``fold_in(rng, c)``).
    batch_size: images per encode call.
    progress: show a progress bar.
    num_workers: grain processes decoding (and resizing) the next batches
      while the device encodes (0: a thread of this process; see
      :func:`pqd_jax.data.pipeline.prefetch_batches`). The latents are the
      same whatever the count.
    prefetch: batches read ahead per worker.

  A class whose file is already in ``directory`` with its count of rows
  (written before a kill) is not encoded again, nor are its images read: a
  killed encode resumes after its last finished class.

  Returns:
    The index. In a multi-process run every process calls this (the encoder
    runs on the global mesh) and process 0 writes the files.

  Raises:
    ValueError: for an unknown dtype.
  """
  if dtype not in DTYPES:
    raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}.")
  os.makedirs(directory, exist_ok=True)
  rng = jax.random.key(0) if rng is None else rng
  writer = distributed.is_coordinator()  # every process encodes its shards
  counts, shape = [], None
  groups = pipeline.class_indices(source)
  # Each class's file as it is on disk (its latent shape when it has the
  # class's count of rows of dtype), decided once by process 0.
  stored = distributed.from_coordinator(functools.partial(
      _stored_shapes, directory, [len(g) for g in groups], dtype))
  # The images of the classes to encode, decoded ahead in encode order:
  # chunks of 4 * batch_size images (one encode call each), cut into each
  # device's rows of the batches the encoder shards (one grain read each).
  chunk, mesh = 4 * batch_size, sharding.data_mesh()
  reads = [(part, pipeline.device_pieces(len(part), batch_size, mesh))
           for label, idx in enumerate(groups) if stored[label] is None
           for part in pipeline.split_batches(idx, chunk)]
  batches = [part[a:b] for part, cut in reads for a, b, _ in cut]
  local = [rows for _, cut in reads for _, _, rows in cut]
  ahead = pipeline.prefetch_batches(
      source, batches, num_workers=num_workers, prefetch=prefetch,
      rows=None if all(r is None for r in local) else local.__getitem__)
  image_shape = source[0][0].shape
  try:
    for label, idx in enumerate(tqdm(groups, desc="encode",
                                     disable=not progress)):
      if len(idx) == 0:
        raise ValueError(f"class {label} ({source.class_names[label]!r}) "
                         "has no images to encode.")
      finished = stored[label]
      if finished is not None and shape in (None, finished):
        # Written before a kill: resume after it.
        shape = finished
        counts.append(len(idx))
        continue
      parts = []
      for s in range(0, len(idx), chunk):
        part = idx[s:s + chunk]
        if finished is None:  # read ahead
          got = [next(ahead) for _ in pipeline.device_pieces(
              len(part), batch_size, mesh)]
        else:  # whole but of another shape than the classes before it
          got = [pipeline.Batch(part, source.labels[part], np.zeros(0, int),
                                None)]
        # Rows converted when indexed: each process its devices' rows.
        images = pipeline.unit_rows(got, source, image_shape)
        parts.append(model_lib.encode(
            ae, images, sample=sample, batch_size=batch_size,
            rng=jax.random.fold_in(jax.random.fold_in(rng, label), s)))
      z = np.concatenate(parts).astype(dtype)
      shape = list(z.shape[1:])
      if writer:
        _write_class(directory, label, z)
      counts.append(int(z.shape[0]))
  finally:
    ahead.close()
  index = {"class_names": list(source.class_names), "latent_shape": shape,
           "dtype": dtype, "counts": counts,
           "scaling_factor": ae.scaling_factor}
  if writer:
    _write_index(directory, index)
  return index


def _stored_shapes(directory: str, counts: list[int],
                   dtype: str) -> list[list[int] | None]:
  """Per class, the latent shape of its file when whole, else None.

  Whole: ``count`` rows of ``dtype``. Files are renamed into place
  complete, so one that reads back with its count is the one a killed run
  wrote. (:func:`encode_source` also needs its shape to be that of the
  classes before it.)
  """
  shapes = []
  for label, count in enumerate(counts):
    try:
      z = np.load(_class_file(directory, label), mmap_mode="r")
    except (OSError, ValueError):
      shapes.append(None)
      continue
    whole = len(z) == count and z.dtype == np.dtype(dtype)
    shapes.append(list(z.shape[1:]) if whole else None)
  return shapes


def _write_class(directory: str, label: int, z: np.ndarray) -> None:
  workdir.save_atomic(_class_file(directory, label),
                      lambda tmp: np.save(tmp, z))


def _write_index(directory: str, index: dict) -> None:
  workdir.write_json(os.path.join(directory, _INDEX), index)


def problem(directory: str) -> str:
  """What a latents artefact lacks: ``""`` when every class file is whole.

  Reads the index and each class file's header (a file shorter than its
  header says fails): its shape must be the class's count by the latent
  shape.
  """
  try:
    _layouts(directory, read_index(directory))
  except workdir.UnreadableFileError as e:
    return f"{os.path.basename(e.path)}: {e.reason}"
  except (OSError, ValueError, KeyError, TypeError) as e:
    return str(e)
  return ""


def _check_dtype(dtype: Any) -> Any:
  """``dtype`` (None or a floating dtype) as a numpy dtype or None."""
  if dtype is None:
    return None
  try:
    out = jax.numpy.dtype(dtype)
  except TypeError:
    out = None
  if out is None or not jax.numpy.issubdtype(out, jax.numpy.floating):
    raise ValueError(
        f"dtype must be a floating dtype such as 'float32' or 'float16', got "
        f"{dtype!r}.")
  return out


def save(directory: str, latents: np.ndarray, labels: np.ndarray,
         class_names: list[str], *, scaling_factor: float = 1.0,
         dtype: str = "float16") -> dict:
  """Writes latents computed elsewhere as a latents artefact.

  Args:
    directory: output directory (created).
    latents: ``[n, *latent_shape]``.
    labels: ``[n]`` in ``[0, len(class_names))``, every class present.
    class_names: names indexed by label.
    scaling_factor: the autoencoder's latent scaling factor.
    dtype: ``"float16"`` or ``"float32"`` on disk.

  Returns:
    The index.

  Raises:
    ValueError: for an unknown dtype, mismatched lengths, labels that are
      not integers in ``[0, len(class_names))``, latents that are not finite
      or do not fit ``dtype``, or an empty class.
  """
  checks.choice("dtype", dtype, DTYPES)
  latents, labels = np.asarray(latents), np.asarray(labels)
  if latents.ndim < 2 or labels.shape != latents.shape[:1]:
    raise ValueError(f"Expected latents [n, ...] and labels [n], got shapes "
                     f"{latents.shape} and {labels.shape}.")
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be integers, got dtype {labels.dtype}.")
  bad = (labels < 0) | (labels >= len(class_names))
  if bad.any():
    raise ValueError(
        f"labels must lie in [0, {len(class_names)}) (one per class name), "
        f"got {np.unique(labels[bad])[:5].tolist()}.")
  if not np.isfinite(latents).all():
    raise ValueError("latents contain NaN or Inf.")
  largest = (max(float(latents.max()), -float(latents.min()))
             if latents.size else 0.0)
  if largest > float(np.finfo(dtype).max):
    raise ValueError(
        f"latents reach {largest:.3g} in absolute value, beyond {dtype}'s "
        f"range; save them with dtype='float32'.")
  os.makedirs(directory, exist_ok=True)
  counts = []
  for label in range(len(class_names)):
    z = latents[labels == label].astype(dtype)
    if len(z) == 0:
      raise ValueError(f"class {label} ({class_names[label]!r}) has no "
                       "latents.")
    _write_class(directory, label, z)
    counts.append(int(len(z)))
  index = {"class_names": list(class_names),
           "latent_shape": list(latents.shape[1:]), "dtype": dtype,
           "counts": counts, "scaling_factor": float(scaling_factor)}
  _write_index(directory, index)
  return index


def load(directory: str, *, lazy: bool = False, dtype: str | None = None
         ) -> tuple[Any, np.ndarray]:
  """The latents and their labels: ``(latents [n, *shape], labels [n])``.

  Args:
    directory: a latents artefact.
    lazy: return the latents as :class:`pqd_jax.sharding.LazyRows` over the
      class files instead of one array in memory: rows are read when
      indexed, so :func:`pqd_jax.quantize` reads in each process of a
      multi-process run only the rows of its own devices.
    dtype: dtype of the rows (a floating dtype); default the stored one.

  Raises:
    ValueError: for a dtype that is not floating point, or an index or a
      class file that is cut short, corrupt or of another count or dtype.
  """
  dtype = _check_dtype(dtype)
  index = read_index(directory)
  counts = index["counts"]
  labels = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
  layouts = _layouts(directory, index)
  advice = workdir.remake(directory)
  if not lazy:
    z = np.concatenate([workdir.read_rows(lay, 0, lay.shape[0], advice=advice)
                        for lay in layouts.values()])
    return (z if dtype is None else z.astype(dtype)), labels
  starts = np.concatenate([[0], np.cumsum(counts)])

  def read(start, stop):
    parts = []
    for c in range(np.searchsorted(starts, start, side="right") - 1,
                   len(counts)):
      if starts[c] >= stop:
        break
      lo, hi = max(start, starts[c]) - starts[c], min(stop, starts[c + 1])
      rows = workdir.read_rows(layouts[c], lo, hi - starts[c], advice=advice)
      parts.append(rows.astype(out_dtype, copy=False))
    if not parts:
      return np.zeros((0, *shape), out_dtype)
    return np.concatenate(parts)

  shape = tuple(index["latent_shape"])
  out_dtype = np.dtype(index["dtype"]) if dtype is None else dtype
  return (sharding.LazyRows(read, (int(starts[-1]), *shape), out_dtype),
          labels)


# Bytes of a chunk of :func:`stream` by default. glibc's allocator reuses
# freed blocks of up to 32 MiB; larger ones are mapped afresh, and each of
# their pages faults on its first write (a fresh chunk each time).
CHUNK_BYTES = 16 << 20


def stream(directory: str, chunk: int | None = None, dtype: str | None = None,
           classes: Sequence[int] | None = None
           ) -> Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]:
  """A re-iterable stream of ``(latents, labels)`` chunks, class by class.

  The returned callable suits :func:`pqd_jax.quantize_stream`. Each chunk
  holds ``chunk`` rows (the last fewer) of consecutive classes, read from
  the class files straight into a new aligned array, frozen
  (:func:`pqd_jax.sharding.freeze`) so that ``quantize_stream`` uses each
  of its batches that lies in one chunk in place (no copy): with chunks of
  fewer rows than a batch, every batch is copied. Only the chunks that the
  caller keeps are in memory.

  Args:
    directory: a latents artefact.
    chunk: rows per chunk; default as many as fit in :data:`CHUNK_BYTES`.
    dtype: dtype of the chunks; default the stored one (float16 latents stay
      float16, half the memory; the quantizer computes in float32).
    classes: stream only these classes' files (default all), in this order.

  Raises:
    ValueError: for a chunk < 1, a dtype that is not floating point,
      classes that are not integer labels of the artefact, or an index or
      a class file that is cut short, corrupt or of another count or dtype.
  """
  dtype = _check_dtype(dtype)
  if chunk is not None:
    chunk = checks.integer("chunk", chunk)
  index = read_index(directory)
  num_classes = len(index["counts"])
  classes = range(num_classes) if classes is None else list(classes)
  bad = [c for c in classes
         if isinstance(c, bool) or not isinstance(c, (int, np.integer))
         or not 0 <= c < num_classes]
  if bad:
    raise ValueError(f"classes {bad[:5]} are not integer labels in "
                     f"[0, {num_classes}).")
  layouts = _layouts(directory, index, classes)
  advice = workdir.remake(directory)

  shape = tuple(index["latent_shape"])
  stored = np.dtype(index["dtype"])
  total = sum(layouts[c].shape[0] for c in classes)
  if chunk is None:
    # The rows are read in the stored dtype, then converted if asked.
    itemsize = max(stored.itemsize, 0 if dtype is None else dtype.itemsize)
    chunk = max(1, CHUNK_BYTES // (math.prod(shape) * itemsize))

  def finished(rows, labels):
    if dtype is not None and dtype != stored:
      wide = sharding.host_empty(rows.shape, dtype)
      wide[...] = rows
      rows = wide
    sharding.freeze(rows)  # quantize_stream then needs no copy
    return rows, np.concatenate(labels)

  def batches():
    rows, labels, fill, left = None, [], 0, total
    for c in classes:
      n = layouts[c].shape[0]
      s = 0
      while s < n:
        if rows is None:
          rows = sharding.host_empty((min(chunk, left),) + shape, stored)
        take = min(len(rows) - fill, n - s)
        workdir.read_rows(layouts[c], s, s + take, advice=advice,
                          out=rows[fill:fill + take])
        labels.append(np.full(take, c, np.int32))
        fill, s, left = fill + take, s + take, left - take
        if fill == len(rows):
          yield finished(rows, labels)
          rows, labels, fill = None, [], 0

  return batches
