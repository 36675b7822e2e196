"""Multi-process JAX: start-up, the coordinator process and barriers.

One Python process runs per host (or per GPU); ``initialize`` joins them into
one JAX runtime, after which ``jax.devices()`` lists the devices of every
process and :func:`pqd_jax.sharding.data_mesh` spans them all. On TPU pods and
SLURM/Open MPI clusters JAX finds the coordinator itself; elsewhere (and on
CPUs, which use gloo collectives) pass the coordinator's ``host:port``, the
number of processes and this process's id.

Only the coordinator (process 0) writes shared artefacts; the others wait at
:func:`barrier` and then read what it wrote.
"""

import json
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

__all__ = ["barrier", "from_coordinator", "initialize", "is_coordinator"]


def initialize(coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None, *,
               auto: bool = False) -> bool:
  """Joins this process to a multi-process JAX runtime.

  Call it before any other JAX call. With no argument and ``auto=False`` it
  does nothing (a single process).

  Args:
    coordinator_address: ``"host:port"`` of process 0.
    num_processes: number of processes (≥ 1).
    process_id: this process's id in ``[0, num_processes)``.
    auto: let JAX detect the cluster (TPU pods, SLURM, Open MPI) when no
      address is given.

  Returns:
    Whether a multi-process runtime was initialised.

  Raises:
    ValueError: when only some of the three settings are given, or they are
      out of range.
  """
  given = [v is not None for v in (coordinator_address, num_processes,
                                   process_id)]
  if not any(given):
    if not auto:
      return False
    jax.distributed.initialize()
    return True
  if not all(given):
    raise ValueError(
        "coordinator_address, num_processes and process_id go together; got "
        f"coordinator_address={coordinator_address!r}, "
        f"num_processes={num_processes!r}, process_id={process_id!r}.")
  if not isinstance(coordinator_address, str) or ":" not in coordinator_address:
    raise ValueError("coordinator_address must be 'host:port', got "
                     f"{coordinator_address!r}.")
  if isinstance(num_processes, bool) or not isinstance(num_processes, int) \
      or num_processes < 1:
    raise ValueError(f"num_processes must be an integer >= 1, got "
                     f"{num_processes!r}.")
  if isinstance(process_id, bool) or not isinstance(process_id, int) \
      or not 0 <= process_id < num_processes:
    raise ValueError(f"process_id must be an integer in [0, {num_processes}),"
                     f" got {process_id!r}.")
  # CPU devices of different processes talk through gloo (no effect on the
  # collectives of GPUs and TPUs).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address, num_processes, process_id)
  return True


def is_coordinator() -> bool:
  """Whether this process writes the shared artefacts (process 0)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier ``name``."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def from_coordinator(decide: Callable[[], Any]) -> Any:
  """``decide()`` as process 0 computes it, on every process.

  Process 0 alone calls ``decide``; the others receive its JSON-able result
  (lists come back as lists). With one process, ``decide()``.
  """
  if jax.process_count() == 1:
    return decide()
  value = decide() if is_coordinator() else None
  data = np.frombuffer(json.dumps(value).encode(), np.uint8)
  size = int(multihost_utils.broadcast_one_to_all(np.int32(len(data))))
  buffer = np.zeros(size, np.uint8)
  if is_coordinator():
    buffer[:] = data
  received = np.asarray(multihost_utils.broadcast_one_to_all(buffer))
  return json.loads(received.astype(np.uint8).tobytes().decode())
