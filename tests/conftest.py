"""Shared fixtures: small data, PRNG keys, one-device kernels."""

import importlib.util
import os

os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

# The tests are dominated by XLA compile time (small shapes, a few steps
# each): LLVM's -O0 backend compiles about twice as fast and computes the
# same functions. Set before JAX starts; subprocesses inherit it through
# fake_device_env. PQD_TEST_XLA_OPT=1 keeps XLA's default optimisation.
TEST_XLA_FLAGS = ("" if os.environ.get("PQD_TEST_XLA_OPT") == "1"
                  else "--xla_backend_optimization_level=0")
if TEST_XLA_FLAGS and "xla_backend_optimization_level" not in os.environ.get(
    "XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " "
                             + TEST_XLA_FLAGS).strip()

import subprocess  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.sharding import PartitionSpec  # noqa: E402

from pqd_jax import sharding  # noqa: E402

# Clear JAX's caches once a worker holds this many memory mappings: well
# below Linux's default ``vm.max_map_count`` (65,530), and rarely enough that
# modules still share most compiled executables.
_MAPPINGS_BEFORE_CLEARING = 20_000


def _mappings() -> int:
  try:
    with open("/proc/self/maps", "rb") as maps:
      return sum(1 for _ in maps)
  except OSError:  # not Linux
    return 0


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_executables():
  """Frees the compiled executables once a worker holds many mappings.

  A worker process runs hundreds of tests; each XLA CPU executable holds a
  few memory mappings, and kept until the process ends they reach Linux's
  ``vm.max_map_count``, where XLA's next compile fails and the process dies
  (SIGSEGV while unwinding the compile error).
  """
  yield
  if _mappings() > _MAPPINGS_BEFORE_CLEARING:
    jax.clear_caches()


@pytest.fixture
def rng() -> jax.Array:
  return jax.random.key(0)


def labelled_blobs(sizes, dim=4, centers_per_class=6, seed=0):
  """Per-class Gaussian mixtures with unequal class sizes.

  Returns:
    ``(x [n, dim] float32, y [n] int)`` with ``sizes[i]`` points of class
    ``10 * i`` (labels deliberately not 0..c-1), rows shuffled.
  """
  gen = np.random.default_rng(seed)
  xs, ys = [], []
  for i, n in enumerate(sizes):
    centers = gen.normal(0, 4, (centers_per_class, dim))
    which = gen.integers(0, centers_per_class, n)
    scale = gen.uniform(0.3, 1.2, (centers_per_class, 1))
    xs.append(centers[which] + scale[which] * gen.normal(size=(n, dim)))
    ys.append(np.full(n, 10 * i))
  x = np.concatenate(xs).astype(np.float32)
  y = np.concatenate(ys)
  perm = gen.permutation(len(y))
  return x[perm], y[perm]


@pytest.fixture
def blobs():
  return labelled_blobs((300, 200, 250))


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_device_env(devices: int, **extra: str) -> dict:
  """The environment of a child JAX with ``devices`` fake CPU devices."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  flags.append(f"--xla_force_host_platform_device_count={devices}")
  return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
              XLA_FLAGS=" ".join(flags), **extra)


def run_on_fake_devices(script, *args, devices=4):
  """Runs ``script`` in a fresh Python with ``devices`` fake CPU devices.

  XLA_FLAGS must be set before JAX starts, hence the subprocess. Fails the
  test with the child's stderr on a non-zero exit.

  Returns:
    The child's stdout.
  """
  env = fake_device_env(devices)
  proc = subprocess.run([sys.executable, "-c", script, *args], env=env,
                        cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def on_one_device(fn, *args):
  """``fn(*args)`` jitted in a ``shard_map`` over a one-device data mesh.

  For the kernels that reduce over ``sharding.DATA_AXIS``; every argument
  and result is replicated.
  """
  mesh = sharding.data_mesh(jax.devices()[:1])
  specs = tuple(PartitionSpec() for _ in args)
  return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=specs,
                               out_specs=PartitionSpec()))(*args)


def load_script(*path: str):
  """The module of a script of the repository, e.g. ``("tools", "x.py")``."""
  name = os.path.splitext(path[-1])[0]
  spec = importlib.util.spec_from_file_location(name,
                                                os.path.join(ROOT, *path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
