"""A run's workdir: cached stage artefacts and the atomic writers behind them.

Each artefact is a directory named after it (``latents/``,
``quantization/``, ...) with a ``stage.json`` written last. Its **digest**
hashes exactly what the stage depends on: the config paths the stage
declares (:class:`Stage`, ``reads``; the stage sees the config only through
a :class:`ConfigView` of those paths, so it cannot read another one), the
digests of its upstream artefacts, and the fingerprints of the data splits it
reads (records, labels, class names and file sizes/mtimes; see
:mod:`pqd_jax.data.sources`). :meth:`Workdir.run` then

- skips the stage when ``stage.json`` names the same digest and every output
  the stage declares is there and readable;
- moves aside to ``<name>.<old digest>`` an artefact made from another config
  or data, or one that is unreadable or incomplete, and makes it again
  (nothing in the workdir is deleted);
- keeps a directory whose ``pending.json`` names the same digest (a killed
  run), so training resumes from its checkpoints;
- holds an exclusive lock on ``.<name>.lock`` beside the artefact from the
  decision to ``stage.json``, so independent runs of one config sharing a
  workdir make each artefact once: the second waits and then finds it made
  (the lock is the operating system's, released when its process dies).
  Runs of different configs should not share a workdir: one moves the
  other's artefacts aside.

Every file is written atomically (a temporary file, then ``os.replace``): a
killed run leaves either the old file or the new one, never half of one.
"""

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax

from pqd_jax import distributed
from pqd_jax.workdir.digests import (
    ConfigView,
    UndeclaredConfigRead,
    config_values,
    digest,
    to_jsonable,
)
from pqd_jax.workdir.files import (
    DAMAGED,
    ArrayLayout,
    UnreadableFileError,
    advise,
    append_jsonl,
    array_layout,
    atomic_directory,
    load_json,
    read_json,
    read_jsonl,
    read_npz,
    read_rows,
    readable,
    reading,
    remake,
    save_atomic,
    tree_stats,
    write_json,
    write_npy,
    write_npz,
    write_text,
)

__all__ = [
    "DAMAGED", "STAGE_FILE", "ArrayLayout", "Artefact", "ConfigView", "Stage",
    "UndeclaredConfigRead", "UnreadableFileError", "Workdir", "advise",
    "append_jsonl", "array_layout", "atomic_directory", "config_values",
    "digest", "load_json", "read_json", "read_jsonl", "read_npz",
    "read_rows", "readable", "reading", "remake", "save_atomic",
    "to_jsonable", "tree_stats", "write_json", "write_npy", "write_npz",
    "write_text",
]

STAGE_FILE = "stage.json"
PENDING_FILE = "pending.json"


class Stage(NamedTuple):
  """A cached stage: its artefact and what its digest covers.

  Attributes:
    name: the artefact directory under the workdir (``"latents"``,
      ``"student/seed0"``).
    step: the pipeline step that makes it (``--stages``: encode, quantize,
      decode, relabel, train, eval).
    reads: the config paths the stage reads (a section covers its fields);
      or a function of the config that returns them.
    splits: the data splits (``"train"``, ``"test"``) whose fingerprints
      enter the digest; or a function of the config that returns them.
    outputs: files (or directories) under the artefact that must be there
      and readable for it to count as done (:func:`readable`); or a
      function of the config that returns them.
    shared: the stage coordinates its own writes across processes (orbax
      checkpoints) instead of only process 0 writing.
    check: ``(directory, stage.json) -> problem``: a deeper check of a made
      artefact ("" when whole), e.g. that every class file is there or that
      the last checkpoint is the one training ended with.
    inputs: ``config -> fingerprints`` of what the stage reads besides the
      config and the data (a checkpoint named by path: :func:`tree_stats`;
      shipped weights); they enter the digest.
  """

  name: str
  step: str
  reads: tuple[str, ...] | Callable[[Any], tuple[str, ...]]
  splits: tuple[str, ...] | Callable[[Any], tuple[str, ...]] = ()
  outputs: tuple[str, ...] | Callable[[Any], tuple[str, ...]] = ()
  shared: bool = False
  check: Callable[[str, dict], str] | None = None
  inputs: Callable[[Any], tuple[str, ...]] | None = None

  def paths(self, config: Any) -> tuple[str, ...]:
    """The declared config paths for ``config``."""
    return tuple(self.reads(config) if callable(self.reads) else self.reads)

  def data_splits(self, config: Any) -> tuple[str, ...]:
    """The splits whose fingerprints enter the digest for ``config``."""
    return tuple(self.splits(config) if callable(self.splits)
                 else self.splits)

  def files(self, config: Any) -> tuple[str, ...]:
    """The outputs that must be readable for ``config``."""
    return tuple(self.outputs(config) if callable(self.outputs)
                 else self.outputs)

  def view(self, config: Any) -> ConfigView:
    """``config`` as this stage may read it."""
    return ConfigView(config, self.paths(config), f"stage {self.name!r}")


class Artefact(NamedTuple):
  """A made (or cached) artefact: where it is and its digest."""

  path: str
  digest: str


class Workdir:
  """Runs stages into a workdir, skipping those already made.

  Args:
    root: the workdir (created).
    steps: the pipeline steps that may make artefacts; a needed artefact of
      another step that is not cached is an error.
    fingerprint: ``split -> str``, the fingerprint of a data split.
    log: receives one line per stage.
    progress: whether the stages show progress bars.
  """

  def __init__(self, root: str, *, steps: Sequence[str],
               fingerprint: Callable[[str], str] = lambda split: "",
               log: Callable[[str], None] = print, progress: bool = True):
    self.root = os.path.abspath(root)
    os.makedirs(self.root, exist_ok=True)
    self.steps = set(steps)
    self.fingerprint = fingerprint
    self.log = log
    self.progress = progress
    self.seconds: dict[str, float] = {}
    self.skipped: list[str] = []

  def path(self, *names: str) -> str:
    """A path under the workdir."""
    return os.path.join(self.root, *names)

  def digest(self, stage: Stage, config: Any,
             upstream: Sequence[Artefact] = ()) -> str:
    """The digest ``stage`` would have for ``config`` and ``upstream``."""
    inputs = stage.inputs(config) if stage.inputs else ()
    return digest(stage.name, stage.step,
                  config_values(config, stage.paths(config)),
                  [a.digest for a in upstream],
                  [self.fingerprint(s) for s in stage.data_splits(config)],
                  list(inputs))

  def done(self, stage: Stage, config: Any, key: str) -> tuple[bool, str]:
    """Whether ``stage``'s artefact is made for ``key``, and if not why."""
    path = self.path(stage.name)
    if not os.path.exists(path):
      return False, ""
    meta_path = os.path.join(path, STAGE_FILE)
    meta = read_json(meta_path)
    if meta is None:
      pending = read_json(os.path.join(path, PENDING_FILE))
      if not os.path.exists(meta_path) and isinstance(pending, dict):
        if pending.get("digest") == key:
          return False, "resuming"
        if "digest" in pending:
          return False, (f"left by a killed run with another config or data "
                         f"(digest {pending['digest']})")
        return False, "left by a killed run of an earlier version of pqd_jax"
      return False, "incomplete (no readable stage.json)"
    if isinstance(meta, dict) and "digest" not in meta:
      return False, "made by an earlier version of pqd_jax"
    if not isinstance(meta, dict) or meta.get("digest") != key:
      old = meta.get("digest") if isinstance(meta, dict) else None
      return False, f"made from another config or data (digest {old})"
    broken = [o for o in stage.files(config)
              if not readable(os.path.join(path, o))]
    if broken:
      return False, f"incomplete (missing or unreadable: {', '.join(broken)})"
    problem = stage.check(path, meta) if stage.check else ""
    if problem:
      return False, f"incomplete ({problem})"
    return True, ""

  def run(self, stage: Stage, config: Any,
          make: Callable[[str, ConfigView], dict | None],
          upstream: Sequence[Artefact] = ()) -> Artefact:
    """Makes ``stage``'s artefact with ``make(directory, view)`` unless done.

    ``make`` may return a dict, recorded in ``stage.json`` as ``"record"``
    (what :attr:`Stage.check` compares the artefact with later).

    In a multi-process run process 0 decides (its digest and what it finds
    in the workdir hold for every process, whose data copies may differ in
    file times); every process runs ``make`` (its computations are
    collective); process 0 writes the artefact and the others write into a
    scratch directory that is removed afterwards, unless ``stage.shared``.

    Raises:
      ValueError: when the artefact is needed but its step was not
        requested.
    """
    with self._lock(stage.name):
      return self._run(stage, config, make, upstream)

  @contextlib.contextmanager
  def _lock(self, name: str):
    """Holds ``.<name>.lock`` exclusively (process 0 only) while inside.

    Where no lock can be had (a read-only workdir, a file system without
    ``flock``) the run goes on unlocked: a cached artefact is still read.
    """
    if not distributed.is_coordinator():
      yield
      return
    path = self.path(name)
    lock = os.path.join(os.path.dirname(path),
                        f".{os.path.basename(path)}.lock")
    try:
      os.makedirs(os.path.dirname(lock), exist_ok=True)
      fd = os.open(lock, os.O_RDONLY | os.O_CREAT, 0o666)
    except OSError:
      fd = None
    try:
      if fd is not None:
        try:
          fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
          self.log(f"waiting for another run making {name}")
          fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # no flock on this file system
          pass
      yield
    finally:
      if fd is not None:
        os.close(fd)  # releases the lock

  def _run(self, stage: Stage, config: Any,
           make: Callable[[str, ConfigView], dict | None],
           upstream: Sequence[Artefact]) -> Artefact:
    path = self.path(stage.name)
    key, done, why = distributed.from_coordinator(
        lambda: self._decide(stage, config, upstream))
    if done:
      self.skipped.append(stage.name)
      self.log(f"{stage.step:>8}: {stage.name} cached ({key})")
      return Artefact(path, key)
    if stage.step not in self.steps:
      raise ValueError(
          f"The {stage.step!r} stage is needed for {stage.name!r} (digest "
          f"{key}) but was not requested; add it to --stages or run without "
          "--stages.")
    coordinator = distributed.is_coordinator()
    target = path
    if coordinator:
      self._prepare(path, key, why)
    elif not stage.shared:
      target = self.path(".scratch", f"process{jax.process_index()}",
                         stage.name)
      shutil.rmtree(target, ignore_errors=True)
      os.makedirs(target)
    distributed.barrier(f"prepare {stage.name}")
    t0 = time.perf_counter()
    record = make(target, stage.view(config))
    seconds = time.perf_counter() - t0
    distributed.barrier(f"run {stage.name}")
    if coordinator:
      write_json(os.path.join(path, STAGE_FILE), {
          "digest": key, "step": stage.step,
          "reads": config_values(config, stage.paths(config)),
          "upstream": [a.digest for a in upstream],
          "data": {s: self.fingerprint(s)
                   for s in stage.data_splits(config)},
          "record": record or {}, "seconds": seconds,
          "date": time.strftime("%Y-%m-%d %H:%M:%S")})
      os.remove(os.path.join(path, PENDING_FILE))
    elif target != path:
      shutil.rmtree(target, ignore_errors=True)
    distributed.barrier(f"finish {stage.name}")
    self.seconds[stage.name] = seconds
    self.log(f"{stage.step:>8}: {stage.name} done in {seconds:.1f} s ({key})")
    return Artefact(path, key)

  def _decide(self, stage: Stage, config: Any,
              upstream: Sequence[Artefact]) -> tuple[str, bool, str]:
    key = self.digest(stage, config, upstream)
    return (key, *self.done(stage, config, key))

  def _prepare(self, path: str, key: str, why: str) -> None:
    """Moves an artefact that is not this one aside; keeps a resumable one."""
    if os.path.exists(path) and why != "resuming":
      meta = read_json(os.path.join(path, STAGE_FILE)) or read_json(
          os.path.join(path, PENDING_FILE))
      old = meta.get("digest") or meta.get("hash") if isinstance(
          meta, dict) else None
      aside = f"{path}.{old or 'old'}"
      while os.path.exists(aside):
        aside += "_"
      os.replace(path, aside)
      self.log(f"{os.path.basename(path)} was {why}: moved aside to "
               f"{os.path.basename(aside)}")
    os.makedirs(path, exist_ok=True)
    write_json(os.path.join(path, PENDING_FILE), {"digest": key})

