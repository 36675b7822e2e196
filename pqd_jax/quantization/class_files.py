"""Stream quantization of a latents artefact's class files, shared out.

A latents artefact (:mod:`pqd_jax.autoencoder.latents`) keeps one file per
class. :func:`quantize_class_files` streams them through
:func:`pqd_jax.quantize_stream` a group of :data:`CLASS_GROUP` classes at a
time; in a multi-process run the groups are dealt out among the processes,
each of which streams only its groups' files on its local devices and shares
its results with the others through npz files in a scratch directory on a
filesystem they all see.
"""

import os

import jax
import numpy as np

from pqd_jax import checks, distributed, sharding, workdir
from pqd_jax.autoencoder import latents as latents_lib
from pqd_jax.quantization import api as api_lib
from pqd_jax.quantization import stream as stream_lib

__all__ = ["CLASS_GROUP", "quantize_class_files", "share_groups"]

# Classes per quantize_stream call, which are also the classes it seeds
# together (``seed_classes``): the unit of work shared out among the
# processes (fixed, so results do not depend on the process count).
CLASS_GROUP = 64

# One group's result: QuantizeResult field name -> host array.
_Fields = dict[str, np.ndarray]


def share_groups(parts: dict[int, _Fields], num_groups: int, scratch: str,
           k: int) -> dict[int, _Fields]:
  """Every group's result, from this process's ``parts`` and the others'.

  Each process writes its groups to ``scratch`` (under a temporary name,
  then renamed, so a reader never sees a partial file), waits for all, reads
  the others' groups, waits again and removes its own files.

  Args:
    parts: this process's groups: group index -> result fields.
    num_groups: number of groups over all processes.
    scratch: directory shared by all processes.
    k: centroids per class (names the files, so runs for several ``k`` do
      not collide).

  Returns:
    Result fields of every group ``0 .. num_groups - 1``.
  """
  mine = list(parts)
  os.makedirs(scratch, exist_ok=True)
  name = lambda g: os.path.join(scratch, f"k{k}_group{g}.npz")
  for g in mine:
    workdir.write_npz(name(g), **parts[g])
  distributed.barrier(f"stream k={k} written")
  out = dict(parts)
  for g in range(num_groups):
    if g not in out:
      with workdir.reading(name(g), "another process wrote it cut short: "
                           "run again"), np.load(name(g)) as f:
        out[g] = dict(f)
  distributed.barrier(f"stream k={k} read")
  for g in mine:  # every process has read them
    os.remove(name(g))
  return out


def quantize_class_files(
    directory: str,
    k: int,
    *,
    weights: str = "mass",
    init: str = "kmeans++",
    n_init: int = 1,
    num_passes: int = 1,
    tol: float = 1e-4,
    batch_size: int = 1024,
    rng: jax.Array | None = None,
    scratch: str,
    class_group: int = CLASS_GROUP,
) -> api_lib.QuantizeResult:
  """:func:`pqd_jax.quantize_stream` on a latents artefact, class group-wise.

  Memory is independent of the dataset size: the class files are read in
  chunks on every pass. The classes are quantized ``class_group`` at a time
  (one ``quantize_stream`` call each, which also seeds them together); the
  result does not depend on the number of processes.

  Args:
    directory: a latents artefact (:mod:`pqd_jax.autoencoder.latents`).
    k: centroids per class.
    weights: ``"mass"``, ``"sqrt"`` or ``"uniform"``.
    init: seeding, one of ``quantize``'s inits.
    n_init: seedings of each class's sample; the best one is kept.
    num_passes: CLVQ passes over the stream (≥ 1).
    tol: relative tolerance for ``converged``.
    batch_size: rows per compiled step.
    rng: PRNG key, the same for every group (class ``y`` seeds from
      ``fold_in(rng, y)``); default ``jax.random.key(0)``.
    scratch: directory on a filesystem shared by all processes, for the
      exchange of results in a multi-process run (unused with one process).
    class_group: classes per ``quantize_stream`` call.

  Returns:
    The ``QuantizeResult`` of all classes, in label order, as host arrays.

  Raises:
    ValueError: on bad arguments (see :func:`pqd_jax.quantize_stream`).
  """
  class_group = checks.integer("class_group", class_group)
  num_classes = len(latents_lib.read_index(directory)["counts"])
  groups = [list(range(g, min(g + class_group, num_classes)))
            for g in range(0, num_classes, class_group)]
  local_mesh = sharding.data_mesh(jax.local_devices())
  parts = {}
  for g in range(jax.process_index(), len(groups), jax.process_count()):
    out = stream_lib.quantize_stream(
        latents_lib.stream(directory, classes=groups[g]), k,
        weights=weights, init=init, n_init=n_init, num_passes=num_passes,
        tol=tol, batch_size=batch_size, seed_classes=class_group, rng=rng,
        mesh=local_mesh)
    parts[g] = {f: np.asarray(v) for f, v in out._asdict().items()}
  if jax.process_count() > 1:
    parts = share_groups(parts, len(groups), scratch, k)
  return api_lib.QuantizeResult(**{
      f: np.concatenate([parts[g][f] for g in range(len(groups))])
      for f in api_lib.QuantizeResult._fields})
