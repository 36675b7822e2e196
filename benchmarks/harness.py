"""What the benchmark scripts share: results files, timing, machine limits.

- **Results files.** A benchmark appends each finished cell to a JSON-lines
  file as one line (:func:`pqd_jax.workdir.append_jsonl`, whole even after a
  line cut by a kill) and skips on a re-run the cells already there
  (:class:`Results`, :func:`finished_rows`), so a long run resumes.
- **Timing.** :func:`timed` (one call), :func:`time_calls` (a warm-up call,
  then repeats) and :func:`time_steps` (a loop that carries a state); each
  waits for the JAX arrays of what it times.
- **Machine limits.** :func:`machine_limits` (the float32 matmul rate and
  the copy bandwidth the throughputs are compared with),
  :func:`lloyd_seconds_per_iteration` and :func:`machine`.
- **Paths and models.** The results directory, the cache of trained models
  and :func:`fmnist_teacher`, the Fashion-MNIST config's teacher.

The scripts run as ``python benchmarks/<name>.py``, so this directory is on
``sys.path`` and they ``import harness``.
"""

import os
import platform
import shutil
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import pqd_jax
from pqd_jax import models, workdir
from pqd_jax.configs import fashion_mnist
from pqd_jax.train import trainer

__all__ = [
    "BENCHMARKS_DIR", "CACHE_DIR", "IterationSeconds", "RESULTS_DIR",
    "Results", "TEACHER_DIR", "Timing", "compiled_flops", "finished_rows",
    "fmnist_teacher",
    "lloyd_seconds_per_iteration", "machine", "machine_limits",
    "publish_copy", "quiet_diffusers", "time_calls", "time_steps", "timed",
    "training_curve",
]

T = TypeVar("T")

BENCHMARKS_DIR = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(BENCHMARKS_DIR, "results")
# Trained models and data the benchmarks make and share (outside the repo).
CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "pqd_jax",
                         "bench")
# The teacher ``student_fmnist.py --cells teacher`` trains.
TEACHER_DIR = os.path.join(CACHE_DIR, "student_fmnist", "teacher")


# ---------------------------------------------------------- results files ---


def _cell_of(row: dict, key: str | Sequence[str]) -> Any:
  """``row``'s cell: its ``key`` field, or the tuple of its ``key`` fields.

  None when a field is missing or is not a string or an integer.
  """
  names = (key,) if isinstance(key, str) else tuple(key)
  values = tuple(row.get(name) for name in names)
  if not all(isinstance(v, str | int) and not isinstance(v, bool)
             for v in values):
    return None
  return values[0] if isinstance(key, str) else values


def finished_rows(path: str, key: str | Sequence[str] = "cell") -> dict:
  """The finished cells of a results file, the last line of a cell winning.

  Args:
    path: a JSON-lines results file (none yet: no cells).
    key: the field that names a cell, or several fields (then a cell is
      the tuple of their values).

  Returns:
    ``{cell: row}``. A line cut by a kill, or a row without the key fields
    (strings or integers), is skipped.
  """
  rows = {}
  for row in workdir.read_jsonl(path):
    cell = _cell_of(row, key)
    if cell is not None:
      rows[cell] = row
  return rows


class Results:
  """A benchmark's results file: the cells it has, the cells to run.

  Args:
    path: the JSON-lines file (made, with its directory, on the first
      append).
    key: the field that names a cell, or several fields (then a cell is the
      tuple of their values).
    cells: the cells asked for: ``None`` or ``"all"`` for every one, or
      their names (comma-separated, or an iterable).

  Attributes:
    rows: ``{cell: row}``, the finished cells (:func:`finished_rows`) and
      those appended since.
  """

  def __init__(self, path: str, key: str | Sequence[str] = "cell",
               cells: str | Iterable[str] | None = None):
    self.path = path
    self.key = key
    if isinstance(cells, str):
      cells = None if cells == "all" else cells.split(",")
    self.wanted = None if cells is None else set(filter(None, cells))
    self.rows = finished_rows(path, key)

  def __contains__(self, cell: Any) -> bool:
    return cell in self.rows

  def __getitem__(self, cell: Any) -> dict:
    return self.rows[cell]

  def todo(self, cell: Any) -> bool:
    """Whether ``cell`` is asked for and not finished (then it says so)."""
    if self.wanted is not None and cell not in self.wanted:
      return False
    if cell in self.rows:
      name = " ".join(map(str, cell)) if isinstance(cell, tuple) else cell
      print(f"{name}: done", flush=True)
      return False
    return True

  def only(self, *cells: str) -> bool:
    """Whether cells were named and all of them are among ``cells``.

    A script returns early when the remaining cells were not asked for.
    """
    return self.wanted is not None and self.wanted <= set(cells)

  def append(self, row: dict) -> dict:
    """Appends ``row`` as one JSON line and records its cell; returns it.

    Raises:
      ValueError: for a row without the key fields.
    """
    cell = _cell_of(row, self.key)
    if cell is None:
      raise ValueError(f"A results row needs {self.key!r} (strings or "
                       f"integers); got the fields {sorted(row)}.")
    workdir.append_jsonl(self.path, row)
    self.rows[cell] = row
    return row

  def reload(self) -> dict:
    """Reads the file again (other processes may append) and returns rows."""
    self.rows = finished_rows(self.path, self.key)
    return self.rows


def training_curve(directory: str, *fields: str) -> list[dict]:
  """The rows of a training run's ``metrics.jsonl`` that have ``fields``.

  Args:
    directory: the training workdir (``pqd_jax`` trainers write
      ``metrics.jsonl`` there).
    *fields: the fields to keep; a row without one of them (a training
      step without evaluation) is left out.

  Returns:
    ``[{field: value}]`` in the file's order.
  """
  rows = workdir.read_jsonl(os.path.join(directory, "metrics.jsonl"))
  return [{f: r[f] for f in fields} for r in rows
          if all(f in r for f in fields)]


def publish_copy(src: str, dst: str) -> None:
  """Copies the directory ``src`` to ``dst`` atomically, unless it is there.

  The copy goes to a temporary name of this process and is renamed onto
  ``dst``; if another process (a second copy of a script, e.g. one per
  core) published ``dst`` in the meantime, this copy is dropped.
  """
  tmp = f"{dst}.{os.getpid()}.tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  shutil.copytree(src, tmp)
  try:
    os.replace(tmp, dst)
  except OSError:
    if not os.path.isdir(dst):
      raise
    shutil.rmtree(tmp)


# ---------------------------------------------------------------- timing ---


def timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
  """``fn(*args, **kwargs)`` and its wall seconds, its JAX arrays ready.

  Returns:
    ``(result, seconds)``.
  """
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(*args, **kwargs))
  return out, time.perf_counter() - t0


class Timing(NamedTuple):
  """The times of :func:`time_calls`.

  Attributes:
    result: the last call's result.
    first: seconds of the warm-up call (compilation, caches).
    times: seconds of each repeat after it.
  """

  result: Any
  first: float
  times: list[float]

  @property
  def best(self) -> float:
    """The fastest repeat."""
    return min(self.times)

  @property
  def median(self) -> float:
    """The median repeat."""
    return statistics.median(self.times)


def time_calls(fn: Callable[[], Any], repeats: int) -> Timing:
  """Calls ``fn`` once to warm up, then ``repeats`` times, each timed.

  Args:
    fn: the work, without arguments; each call is timed until its JAX
      arrays are ready.
    repeats: timed calls after the warm-up (>= 1).

  Raises:
    ValueError: for ``repeats`` < 1.
  """
  if repeats < 1:
    raise ValueError(f"repeats={repeats}; expected at least 1.")
  out, first = timed(fn)
  times = []
  for _ in range(repeats):
    out, seconds = timed(fn)
    times.append(seconds)
  return Timing(out, first, times)


def time_steps(step: Callable[[T, int], T], carry: T,
               n: int) -> tuple[T, float]:
  """Seconds of ``n`` steps ``carry = step(carry, i)``, after a warm-up.

  ``step(carry, 0)`` runs first (it compiles) and is not timed; the ``n``
  steps are dispatched back to back and timed until the last carry is
  ready, as a training loop runs.

  Returns:
    ``(the last carry, seconds of the n steps)``.
  """
  carry = jax.block_until_ready(step(carry, 0))
  t0 = time.perf_counter()
  for i in range(n):
    carry = step(carry, i)
  carry = jax.block_until_ready(carry)
  return carry, time.perf_counter() - t0


# -------------------------------------------------------- machine limits ---


def compiled_flops(compiled: Any) -> float | None:
  """XLA's FLOP count of a compiled program (None without a cost analysis)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost.get("flops", 0.0)) if cost else None


def parse_ints(spec: str, flag: str, minimum: int = 1,
               unique: bool = True) -> list[int]:
  """``"10,1,50"`` → ``[10, 1, 50]`` (in order; each once if ``unique``).

  Raises:
    ValueError: naming ``flag`` and the item, for an item that is not an
      integer ≥ ``minimum``, or for no items.
  """
  out = []
  for item in filter(None, spec.split(",")):
    try:
      value = int(item)
    except ValueError:
      value = minimum - 1
    if value < minimum:
      raise ValueError(f"{flag}: {item!r} is not an integer >= {minimum}; "
                       "expected comma-separated integers, e.g. 1,10,50.")
    if not unique or value not in out:
      out.append(value)
  if not out:
    raise ValueError(f"{flag}: {spec!r} has no value; expected "
                     f"comma-separated integers >= {minimum}, e.g. 1,10,50.")
  return out


def machine() -> str:
  """This machine in a results row: ``"x86_64, 2 cores"``."""
  return f"{platform.machine()}, {os.cpu_count()} cores"


def machine_limits(repeats: int = 3) -> dict[str, float]:
  """This machine's float32 matmul rate and memory copy bandwidth.

  Each is the best of ``repeats`` runs after a warm-up: a 3072 × 3072
  float32 matmul by numpy and by XLA (2·n³ FLOPs), and a copy of 1 GiB
  (its bytes read plus written).

  Returns:
    ``numpy_gflops``, ``xla_gflops`` (GFLOP/s) and ``copy_gbs`` (GB/s).
  """
  n = 3072
  best = lambda fn: time_calls(fn, repeats).best
  a = np.random.default_rng(0).standard_normal((n, n), np.float32)
  numpy_s = best(lambda: a @ a)
  aj = jnp.asarray(a)
  matmul = jax.jit(lambda a: a @ a)
  xla_s = best(lambda: matmul(aj))
  big = np.ones(1 << 28, np.float32)
  dst = np.empty_like(big)
  copy_s = best(lambda: np.copyto(dst, big))
  return {"numpy_gflops": 2 * n**3 / numpy_s / 1e9,
          "xla_gflops": 2 * n**3 / xla_s / 1e9,
          "copy_gbs": 2 * big.nbytes / copy_s / 1e9}


class IterationSeconds(NamedTuple):
  """Seconds per Lloyd iteration from two statistics of the same runs.

  Attributes:
    median: the slope between the median runs.
    best: the slope between the fastest runs (the statistic of
      :func:`machine_limits`, so that a ratio to its floors compares like
      with like on a noisy machine).
  """

  median: float
  best: float


def lloyd_seconds_per_iteration(points: Any, labels: Any, k: int, *,
                                seed: int = 0,
                                repeats: int = 3) -> IterationSeconds:
  """Seconds per Lloyd iteration of :func:`pqd_jax.quantize`, init excluded.

  The slope of its wall time (``repeats`` warm runs each, tolerance 0)
  between 1 and 11 assignment passes over all classes.
  """
  def at(iters):
    fn = lambda: pqd_jax.quantize(points, labels, k, num_iters=iters,
                                  tol=0.0, rng=jax.random.key(seed)).centroids
    return time_calls(fn, repeats)

  one, eleven = at(1), at(11)
  return IterationSeconds(median=(eleven.median - one.median) / 10,
                          best=(eleven.best - one.best) / 10)


# -------------------------------------------------------- shared models ---


def fmnist_teacher(directory: str | None = None) -> tuple[nn.Module, Any]:
  """The Fashion-MNIST config's teacher network, and its trained variables.

  Args:
    directory: the teacher's training workdir (:data:`TEACHER_DIR` is
      ``student_fmnist.py``'s); None: no variables.

  Returns:
    ``(model, variables or None)``.
  """
  model = models.build_classifier(fashion_mnist.get_config().teacher, 10)
  if directory is None:
    return model, None
  return model, trainer.restore_variables(model, directory, (28, 28, 1))


def quiet_diffusers() -> None:
  """No notice that diffusers' Flax classes are deprecated in the log.

  The scripts that use diffusers call it first thing in ``main``.
  """
  from diffusers.utils import logging

  logging.set_verbosity_error()
