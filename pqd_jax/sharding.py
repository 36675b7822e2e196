"""Device meshes: one ``"data"`` axis over every device (all hosts)."""

from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["DATA_AXIS", "data_mesh", "map_batches", "num_data_shards"]

DATA_AXIS = "data"


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
    arrays: arrays with the same leading size ``n``.
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
    chunks = []
    for i, arr in enumerate(arrays):
      chunk = np.asarray(arr[s:s + batch_size],
                         None if dtypes is None else dtypes[i])
      pad = batch_size - chunk.shape[0]
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:],
                                                chunk.dtype)])
      chunks.append(jax.device_put(chunk, spec))
    out = np.asarray(fn(*chunks, s))
    outs.append(out[:min(batch_size, n - s)])
  return np.concatenate(outs)
