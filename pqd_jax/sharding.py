"""Device meshes: one ``"data"`` axis over every device (all hosts)."""

import jax
from jax.sharding import Mesh

__all__ = ["DATA_AXIS", "data_mesh", "num_data_shards"]

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
