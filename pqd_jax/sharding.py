"""Device meshes: one ``"data"`` axis over every device (all hosts).

Host arrays become global ``jax.Array`` s through
``jax.make_array_from_callback``: every process builds only the shards of its
own devices, so the same code places data on one CPU, on several local
devices, or across the processes of a pod (each process then reads only the
rows its devices hold).
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["DATA_AXIS", "LazyRows", "accepted_compiler_options", "data_mesh",
           "freeze", "frozen", "global_array", "host_aligned", "host_empty",
           "host_zeros", "map_batches", "num_data_shards", "pad_to_shards",
           "replicate", "shard_batch", "to_host"]

DATA_AXIS = "data"


_HOST_ALIGNMENT = 64  # bytes; XLA:CPU's minimum alignment for a view


def data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """Returns a 1-D mesh with a ``"data"`` axis over ``devices``.

  Args:
    devices: devices to span; default every device of every process
      (``jax.devices()``), so the same call builds the global mesh on a pod.

  Returns:
    A ``jax.sharding.Mesh`` of shape ``[len(devices)]`` named ``("data",)``.
  """
  if devices is None:
    devices = jax.devices()
  if not devices:
    raise ValueError("data_mesh needs at least one device, got none.")
  return Mesh(list(devices), (DATA_AXIS,))


def num_data_shards(mesh: Mesh) -> int:
  """Number of shards along the mesh's ``"data"`` axis.

  Raises:
    ValueError: if the mesh has no ``"data"`` axis.
  """
  if DATA_AXIS not in mesh.shape:
    raise ValueError(
        f"Expected a mesh with a {DATA_AXIS!r} axis, got axes "
        f"{tuple(mesh.shape)}."
    )
  return int(mesh.shape[DATA_AXIS])


def global_array(host: Any, sharding: NamedSharding) -> jax.Array:
  """A global array with ``sharding`` built from a host array (or memmap).

  Each process reads only ``host[index]`` for the shards of its own devices,
  so ``host`` may be a memory map, a lazily read array or any object with
  ``shape``, ``dtype`` and numpy indexing by slices.
  """
  shape = tuple(host.shape)
  return jax.make_array_from_callback(
      shape, sharding, lambda index: np.asarray(host[index]))


def host_zeros(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
  """A zero host array whose data start on a 64-byte boundary.

  XLA:CPU takes such a buffer as the device array without copying it
  (:func:`global_array` of a host array built here, or ``device_put(...,
  may_alias=True)``, costs no transfer on a CPU device); an unaligned one
  is copied. Fill it and hand it over, but do not write to it afterwards:
  the device array may be a view of it.
  """
  return _aligned(np.zeros, shape, dtype)


def host_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
  """:func:`host_zeros` left uninitialised, for an array filled at once."""
  return _aligned(np.empty, shape, dtype)


def host_aligned(a: np.ndarray) -> bool:
  """Whether ``a``'s data start on the boundary of :func:`host_zeros`."""
  return a.ctypes.data % _HOST_ALIGNMENT == 0


def freeze(a: np.ndarray) -> np.ndarray:
  """Marks ``a`` and every array it is a view of read-only; returns ``a``.

  A promise that its memory will not change: :func:`frozen` is then true
  if numpy allocated it, and a consumer may keep views of it (as
  :func:`pqd_jax.quantize_stream` does) instead of copying it.
  """
  base = a
  while isinstance(base, np.ndarray):
    base.flags.writeable = False
    base = base.base
  return a


def frozen(a: np.ndarray) -> bool:
  """Whether ``a``'s memory is numpy's and read-only through every view.

  True for :func:`freeze`'s arrays; false if ``a`` or any array it views is
  writeable (a buffer its owner may reuse), and for memory that numpy did
  not allocate (a memory map, another object's buffer).
  """
  base = a
  while isinstance(base, np.ndarray):
    if base.flags.writeable:
      return False
    if base.flags.owndata:
      return True
    base = base.base
  return False


def _aligned(alloc, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
  dtype = np.dtype(dtype)
  nbytes = math.prod(shape) * dtype.itemsize
  raw = alloc(nbytes + _HOST_ALIGNMENT, np.uint8)
  start = -raw.ctypes.data % _HOST_ALIGNMENT
  # An explicit offset: an empty slice of ``raw`` need not keep its start.
  return np.ndarray(shape, dtype, buffer=raw, offset=start)


def accepted_compiler_options(options: dict[str, Any],
                              platform: str) -> dict[str, Any]:
  """The XLA ``options`` that this jaxlib's compiler for ``platform`` accepts.

  XLA's debug options come and go between releases, and an unknown one
  fails the compile (``No such compile option``); each option is tried once
  on a trivial program and dropped if refused.

  Args:
    options: XLA option name → value, as for ``jax.jit``'s
      ``compiler_options``.
    platform: the backend that will compile (``"cpu"``, ``"gpu"``,
      ``"tpu"``); the probe runs on this process's first device of it.

  Returns:
    The accepted subset of ``options``.
  """
  return {name: value for name, value in options.items()
          if _accepts(name, value, platform)}


@functools.cache
def _accepts(name: str, value: Any, platform: str) -> bool:
  probe = jax.jit(lambda x: x + 1, compiler_options={name: value})
  device = jax.local_devices(backend=platform)[0]
  try:
    probe.lower(jax.device_put(np.float32(0), device)).compile()
  except jax.errors.JaxRuntimeError:
    return False
  return True


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Every leaf of ``tree`` replicated on every device of ``mesh``."""
  spec = NamedSharding(mesh, P())

  def place(leaf):
    if isinstance(leaf, jax.Array):
      if leaf.sharding == spec:
        return leaf
      if jax.process_count() == 1:
        # Also for a leaf already on every device under an equivalent
        # sharding (e.g. single-device): its type must carry the mesh, or a
        # jitted step compiles once for the first input type and again for
        # the type of its own outputs.
        return jax.device_put(leaf, spec)
      if leaf.sharding.is_equivalent_to(spec, leaf.ndim):
        return leaf
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(
        leaf.dtype, jax.dtypes.prng_key):
      data = global_array(np.asarray(jax.random.key_data(leaf)), spec)
      return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
    return global_array(np.asarray(leaf), spec)

  return jax.tree.map(place, tree)


class LazyRows:
  """An array whose rows are read only when indexed.

  ``read(start, stop)`` returns rows ``[start, stop)`` as a numpy array;
  ``rows[a:b, ...]`` calls it for just those rows. Given to
  :func:`shard_batch` (or :func:`global_array`), each process of a
  multi-process run reads only the rows of its own devices.

  Attributes:
    shape: ``[n, ...]``.
    dtype: the rows' dtype.
  """

  def __init__(self, read: Callable[[int, int], np.ndarray], shape: tuple,
               dtype: Any):
    self.read, self.shape, self.dtype = read, tuple(shape), np.dtype(dtype)

  def __len__(self) -> int:
    return self.shape[0]

  @property
  def ndim(self) -> int:
    """The number of dimensions."""
    return len(self.shape)

  def __getitem__(self, index: Any) -> np.ndarray:
    index = index if isinstance(index, tuple) else (index,)
    if not isinstance(index[0], slice):
      raise TypeError(f"LazyRows supports slices of rows, got {index[0]!r}.")
    start, stop, step = index[0].indices(self.shape[0])
    if step != 1:
      raise TypeError(f"LazyRows supports contiguous rows, got {index[0]!r}.")
    rows = np.asarray(self.read(start, stop), self.dtype)
    return rows[(slice(None),) + index[1:]]

  def take(self, indices: Any) -> np.ndarray:
    """Rows ``indices`` (any order, repeats allowed).

    Each run of consecutive distinct indices is read with one ``read`` call.

    Raises:
      IndexError: for an index outside ``[-n, n)``.
    """
    indices = np.asarray(indices, np.int64).reshape(-1)
    n = self.shape[0]
    if indices.size == 0:
      return np.zeros((0,) + self.shape[1:], self.dtype)
    if indices.min() < -n or indices.max() >= n:
      raise IndexError(f"LazyRows.take: indices must be in [{-n}, {n}), got "
                       f"range [{indices.min()}, {indices.max()}].")
    distinct, where = np.unique(indices % n, return_inverse=True)
    runs = np.split(distinct, np.flatnonzero(np.diff(distinct) != 1) + 1)
    rows = np.concatenate([self[int(r[0]):int(r[-1]) + 1] for r in runs])
    return rows[where.reshape(-1)]

  def __array__(self, dtype=None, copy=None) -> np.ndarray:
    out = self.read(0, self.shape[0])
    return np.asarray(out, dtype or self.dtype)

  def padded(self, n: int) -> "LazyRows":
    """The first ``n >= len`` rows, those past the end repeating the last."""
    size = self.shape[0]

    def read(start, stop):
      hi = min(stop, size)
      parts = [self.read(start, hi)] if hi > start else []
      if stop > max(start, size):
        last = self.read(size - 1, size)
        parts.append(np.repeat(last, stop - max(start, size), axis=0))
      return np.concatenate(parts)

    return LazyRows(read, (n,) + self.shape[1:], self.dtype)


def pad_to_shards(batch: dict, shards: int) -> dict:
  """Pads a batch's leading axis to a multiple of ``shards``.

  Padding rows repeat the last row and get ``weight`` 0, so a loss normalised
  by the batch's weight sum is unchanged (BatchNorm batch statistics do see
  them). A batch that needs padding must have a ``"weight"`` entry.
  """
  n = len(next(iter(batch.values())))
  pad = -n % shards
  if not pad:
    return batch
  if "weight" not in batch:
    raise ValueError(
        f"A batch of {n} rows cannot be split over {shards} devices and has "
        "no 'weight' entry to pad it with weight-0 rows; use a batch size "
        f"that is a multiple of {shards}.")
  out = {}
  for key, value in batch.items():
    if isinstance(value, LazyRows):
      if key == "weight":
        value = np.asarray(value)
      else:
        out[key] = value.padded(n + pad)
        continue
    value = np.asarray(value)
    fill = (np.zeros((pad,) + value.shape[1:], value.dtype) if key == "weight"
            else np.repeat(value[-1:], pad, axis=0))
    out[key] = np.concatenate([value, fill])
  return out


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """A host batch split over the mesh's ``"data"`` axis (padded if needed).

  Every process passes the same global batch; each one materialises only
  the rows of its own devices, and reads only those of a :class:`LazyRows`
  entry.
  """
  batch = pad_to_shards(batch, num_data_shards(mesh))
  spec = NamedSharding(mesh, P(DATA_AXIS))
  return {key: global_array(
      value if isinstance(value, LazyRows) else np.asarray(value), spec)
          for key, value in batch.items()}


def to_host(array: jax.Array) -> np.ndarray:
  """A (possibly multi-process) global array as a full numpy array."""
  if getattr(array, "is_fully_addressable", True) or array.is_fully_replicated:
    return np.asarray(array)
  return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def _batch_rows(arr: Any, first: int, size: int, n: int,
                dtype: Any) -> LazyRows:
  """Rows ``first`` to ``first + size`` of ``arr``, zeros past ``n``.

  Read only when indexed, so each process reads only its devices' rows.
  """
  dtype = np.dtype(dtype or arr.dtype)
  shape = tuple(arr.shape[1:])

  def read(start, stop):
    lo, hi = first + start, min(first + stop, n)
    zeros = np.zeros((stop - start - max(hi - lo, 0),) + shape, dtype)
    if hi <= lo:
      return zeros
    return np.concatenate([np.asarray(arr[lo:hi], dtype), zeros])

  return LazyRows(read, (size,) + shape, dtype)


def map_batches(fn: Callable[..., jax.Array], arrays: tuple[np.ndarray, ...],
                batch_size: int, mesh: Mesh | None = None, *,
                dtypes: tuple | None = None) -> np.ndarray:
  """Applies ``fn`` to fixed-size batches sharded over the ``"data"`` axis.

  ``fn(*chunks, start)`` gets one batch of each array (rows ``start`` to
  ``start + batch_size``, each placed with its leading axis split over the
  mesh) and returns ``[batch_size, ...]``. Every batch has the same size (the
  last one is padded with zeros and its padding dropped from the output), so
  ``fn`` compiles once; the batch size is rounded up to a multiple of the
  shards.

  Args:
    fn: the per-batch function (usually jitted).
    arrays: arrays with the same leading size ``n`` (numpy, memory maps or
      :class:`LazyRows`: each process reads only its devices' rows).
    batch_size: rows per call.
    mesh: default every device.
    dtypes: per array, the dtype its chunks are cast to (None: as is); the
      cast is per chunk, so a large float16 array is never copied whole.

  Returns:
    ``[n, ...]``: the outputs concatenated, as numpy.
  """
  mesh = data_mesh() if mesh is None else mesh
  shards = num_data_shards(mesh)
  n = arrays[0].shape[0]
  batch_size = -(-max(1, min(batch_size, n)) // shards) * shards
  spec = NamedSharding(mesh, P(DATA_AXIS))
  outs = []
  for s in range(0, n, batch_size):
    chunks = [global_array(_batch_rows(arr, s, batch_size, n,
                                       None if dtypes is None else dtypes[i]),
                           spec)
              for i, arr in enumerate(arrays)]
    out = to_host(fn(*chunks, s))
    outs.append(out[:min(batch_size, n - s)])
  return np.concatenate(outs)
