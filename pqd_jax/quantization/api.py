"""``pqd_jax.quantize``: per-class optimal quantization, batched and sharded.

The latents of all classes are grouped on the host into one padded array
``[c, n, d]`` (padding masked out), sharded over the mesh's ``"data"`` axis
along ``n`` and quantized by one jitted program: ``shard_map`` over devices,
``lax.map`` over classes (each class runs its own while-loop, so a class that
has converged stops costing, and its points stay in cache), ``psum`` of the
cell statistics across devices. One compilation serves every class.
"""

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from pqd_jax import checks, sharding
from pqd_jax.quantization import cells, inputs, seeding
from pqd_jax.quantization import clvq as clvq_lib
from pqd_jax.quantization import d4m as d4m_lib
from pqd_jax.quantization import frame as frame_lib
from pqd_jax.quantization import lloyd as lloyd_lib
from pqd_jax.quantization import weights as weights_lib

# Re-exported: the input checks keep their ``api.X`` names.
from pqd_jax.quantization.inputs import check_labels, check_latents

__all__ = ["METHODS", "INITS", "QuantizeResult", "quantize"]

METHODS = ("lloyd", "clvq", "d4m")
INITS = ("kmeans++", "kmeans||", "random")
# Distances are computed [k, chunk] at a time: this many float32 entries.
_CHUNK_ELEMENTS = 1 << 20


class QuantizeResult(NamedTuple):
  """Per-class quantizers of a labelled point set.

  Attributes:
    centroids: ``[c, k, *latent_shape]`` float32 centroids, classes in the
      order of ``classes``.
    weights: ``[c, k]`` float32 weights of the chosen scheme, mean 1 per class.
    counts: ``[c, k]`` int32 number of the class's points in each centroid's
      Voronoi cell (exact for the returned centroids; sums to the class size).
    distortion: ``[c]`` float32 mean squared distance of the class's points to
      their nearest centroid, i.e. W2² between the class's empirical measure
      and the mass-weighted quantizer.
    classes: ``[c]`` the sorted distinct labels.
    iterations: ``[c]`` int32 Lloyd assignment passes (or CLVQ epochs / stream
      passes) that ran.
    converged: ``[c]`` bool, whether the tolerance was met.
  """

  centroids: jax.Array
  weights: jax.Array
  counts: jax.Array
  distortion: jax.Array
  classes: np.ndarray
  iterations: jax.Array
  converged: jax.Array


class _Layout(NamedTuple):
  """How the grouped points sit in the padded, sharded array."""

  classes: np.ndarray  # [c] sorted distinct labels
  sizes: np.ndarray  # [c] points per class
  chunk: int  # rows per distance chunk
  n_local: int  # rows per class per device (multiple of chunk)
  shards: int  # devices along "data"


def _layout(labels: np.ndarray, k: int, shards: int,
            chunk_size: int | None) -> _Layout:
  classes, sizes = np.unique(labels, return_counts=True)
  per_device = -(-int(sizes.max()) // shards)
  if chunk_size is None:
    chunk = max(8, _CHUNK_ELEMENTS // max(k, 1))
  else:
    chunk = checks.integer("chunk_size", chunk_size)
  chunk = min(chunk, per_device)
  n_local = -(-per_device // chunk) * chunk
  return _Layout(classes, sizes, chunk, n_local, shards)


class _Grouped:
  """The points grouped by class, zero-padded, read shard by shard.

  Row ``r`` of class ``i`` is the class's ``r``-th point in input order (zero
  past its size), so device ``j`` of the ``"data"`` axis holds a contiguous
  block of each class and the concatenation of all devices' blocks is the same
  sequence whatever the device count (k-means++ then draws the same points on
  1 or 4 devices). Indexing ``[:, r0:r1, :]`` reads only those rows of the
  input, so a process of a multi-process run reads only its devices' share.
  """

  def __init__(self, flat: Any, labels: np.ndarray, layout: _Layout):
    cls = np.searchsorted(layout.classes, labels)
    sorted_ = bool(np.all(cls[1:] >= cls[:-1]))
    self.order = None if sorted_ else np.argsort(cls, kind="stable")
    self.starts = np.concatenate([[0], np.cumsum(layout.sizes)[:-1]])
    if self.order is not None and isinstance(flat, sharding.LazyRows):
      flat = np.asarray(flat)  # unsorted labels: rows are gathered
    self.flat, self.layout = flat, layout
    self.n_pad = layout.shards * layout.n_local
    self.shape = (layout.classes.shape[0], self.n_pad, flat.shape[1])
    self.dtype = flat.dtype

  def _rows(self, start: int, stop: int) -> np.ndarray:
    out = sharding.host_zeros((self.shape[0], stop - start, self.shape[2]),
                              self.dtype)
    for i, (first, size) in enumerate(zip(self.starts, self.layout.sizes,
                                          strict=True)):
      hi = min(stop, int(size))
      if hi > start:
        rows = slice(first + start, first + hi)
        out[i, :hi - start] = (self.flat[rows] if self.order is None
                               else self.flat[self.order[rows]])
    return out

  def __getitem__(self, index: tuple) -> np.ndarray:
    classes, rows, dims = index
    start, stop, _ = rows.indices(self.n_pad)
    return self._rows(start, stop)[classes, :, dims]

  def mask(self) -> np.ndarray:
    """``[c, n_pad]``: which rows are points."""
    return np.arange(self.n_pad)[None, :] < self.layout.sizes[:, None]


@functools.lru_cache(maxsize=8)
def _compiled_frame(mesh: Mesh):
  """The jitted ``ClassFrame`` of every class: its mean and largest deviation.

  Computed before the quantizer so that a spread whose distortion would
  overflow float32 is refused before any work (``frame.check_spread``).
  """
  axis = sharding.DATA_AXIS

  def one_class(args):
    x, mask = args
    weight = mask.astype(jnp.float32)
    n = jax.lax.psum(jnp.sum(weight), axis)
    xf = x.astype(jnp.float32)
    # The sum over points as a matrix-vector product: a column reduction
    # of [n, d] is about twice as slow on CPU.
    shift = jax.lax.psum(weight @ xf, axis) / n
    spread = jax.lax.pmax(
        jnp.max(jnp.where(mask[:, None], jnp.abs(xf - shift), 0.0)), axis)
    return shift, jnp.where(spread == 0, 1.0, spread)  # NaN, inf are refused

  def all_classes(x, mask):
    return frame_lib.ClassFrame(*jax.lax.map(one_class, (x, mask)))

  return jax.jit(jax.shard_map(
      all_classes, mesh=mesh,
      in_specs=(P(None, axis, None), P(None, axis)), out_specs=P()))


# XLA:CPU's legacy fusion emitters compile the quantizer in about a third
# less time than its default ones, and it runs within a few percent of the
# same time (benchmarks/RESULTS.md, stream_quantize, "the quantizer compiled
# with XLA:CPU's legacy emitters"). It is compiled once per run, where
# compilation is most of its cost on small data.
_CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


@functools.lru_cache(maxsize=32)
def _compiled(mesh: Mesh, method: str, k: int, num_iters: int, tol: float,
              init: str, n_init: int, n_local_trials: int | None,
              batch_size: int, chunk: int, class_batch_size: int):
  """The jitted, sharded quantizer for one static configuration.

  Each class is quantized in its ``ClassFrame``, as ``(x - shift) / scale``:
  its mean at the origin and its points in [-1, 1], so that the expanded
  distances ``||c||^2 - 2 c.x`` cannot lose the spread to an offset
  (cancellation) or to a tiny or huge scale (underflow, overflow). Two
  phases, each a ``lax.map`` over classes: the seeds, one class at a time (k
  passes over the class's points, which then stay in cache), and the
  iterations, ``class_batch_size`` classes side by side.
  """
  axis = sharding.DATA_AXIS

  def prepare(x, mask, shift, scale):
    # In float32 whatever the input's dtype: half-precision points give the
    # quantizer of their float32 copy (one class's copy at a time).
    x = cells.chunk_points((x.astype(jnp.float32) - shift) / scale, chunk)
    mask = cells.chunk_points(mask, chunk)
    return x, jnp.sum(x * x, axis=-1), mask

  def seed_class(args):
    key, x, mask, shift, scale = args
    d = x.shape[-1]
    x, x_sq, mask = prepare(x, mask, shift, scale)
    seed = functools.partial(
        seeding.initial_centroids, x=x.reshape(-1, d),
        x_sq=x_sq.reshape(-1), mask=mask.reshape(-1), k=k, init=init,
        chunk=chunk,
        n_local_trials=n_local_trials, axis_name=axis)
    keys = jax.random.split(jax.random.fold_in(key, 0), n_init)
    return jax.lax.map(lambda key: seed(key), keys)  # [n_init, k, d]

  def fit_class(args):
    key, seeds, x, mask, shift, scale = args
    x, x_sq, mask = prepare(x, mask, shift, scale)
    if method == "lloyd":
      run = lambda c0: lloyd_lib.lloyd(c0, x, x_sq, mask, num_iters=num_iters,
                                       tol=tol, axis_name=axis)
    else:
      order_key = jax.random.fold_in(key, 1)
      run = lambda c0: clvq_lib.clvq(order_key, c0, x, x_sq, mask,
                                     num_iters=num_iters, tol=tol,
                                     batch_size=batch_size, axis_name=axis)
    if n_init == 1:
      return run(seeds[0])
    restarts = jax.vmap(run)(seeds)
    best = jnp.argmin(restarts.distortion)
    return jax.tree.map(lambda leaf: leaf[best], restarts)

  def d4m_class(args):
    key, x, mask, shift, scale = args
    x, x_sq, mask = prepare(x, mask, shift, scale)
    return d4m_lib.d4m(jax.random.fold_in(key, 2), x, x_sq, mask, k,
                       axis_name=axis)

  def all_classes(keys, x, mask, shift, scale):
    if method == "d4m":  # seeds itself from the first batch
      return jax.lax.map(d4m_class, (keys, x, mask, shift, scale),
                         batch_size=class_batch_size)
    seeds = jax.lax.map(seed_class, (keys, x, mask, shift, scale))
    return jax.lax.map(fit_class, (keys, seeds, x, mask, shift, scale),
                       batch_size=class_batch_size)

  sharded = jax.shard_map(
      all_classes, mesh=mesh,
      in_specs=(P(), P(None, axis, None), P(None, axis), P(), P()),
      out_specs=P(),
  )

  def run(rng, labels, x, mask, shift, scale):
    # Class y's key is fold_in(rng, y), whatever the other classes.
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, labels)
    return sharded(keys, x, mask, shift, scale)

  platform = mesh.devices.flat[0].platform
  options = (sharding.accepted_compiler_options(_CPU_COMPILER_OPTIONS, platform)
             if platform == "cpu" else {})
  return jax.jit(run, compiler_options=options or None)


@functools.partial(jax.jit, static_argnames="scheme")
def centroids_and_weights(
    frame: frame_lib.ClassFrame, centroids: jax.Array, counts: jax.Array,
    scheme: str) -> tuple[jax.Array, jax.Array]:
  """``[c, k, d]`` centroids in the data's units and their ``[c, k]`` weights.

  One compiled call for what the quantizers return (eagerly, each operation
  would compile on its own the first time).

  Args:
    frame: the ``[c]`` classes' frames.
    centroids: ``[c, k, d]`` float32 centroids in the frames.
    counts: ``[c, k]`` int32 cell counts.
    scheme: a weights scheme of :func:`~pqd_jax.cell_weights`.

  Returns:
    ``(centroids [c, k, d], weights [c, k])``, float32.
  """
  return (frame.centroids_back(centroids),
          weights_lib.cell_weights(counts, scheme))


def quantize(
    latents: Any,
    labels: Any,
    k: int,
    *,
    method: str = "lloyd",
    weights: str = "mass",
    init: str = "kmeans++",
    n_init: int = 1,
    num_iters: int = 100,
    tol: float = 1e-4,
    rng: jax.Array | None = None,
    mesh: Mesh | None = None,
    batch_size: int = 1024,
    chunk_size: int | None = None,
    class_batch_size: int = 2,
    n_local_trials: int | None = None,
) -> QuantizeResult:
  """Quantizes each class's latents with ``k`` weighted centroids.

  For every class, finds ``k`` centroids minimising the mean squared distance
  of the class's latents to their nearest centroid (Lloyd's k-means from
  greedy k-means++ seeds, or CLVQ / mini-batch k-means), and weights each
  centroid by its Voronoi cell (DDOQ). All classes run in one jitted program,
  their points sharded over the mesh's ``"data"`` axis.

  Args:
    latents: ``[n, *latent_shape]`` float32/bfloat16/float16 points, or
      :class:`pqd_jax.sharding.LazyRows` (e.g.
      ``pqd_jax.autoencoder.latents.load(directory, lazy=True)``) so that
      each process reads only the rows of its own devices.
    labels: ``[n]`` integer class labels (any values; sorted in the output).
    k: centroids per class (IPC); at most the size of the smallest class.
    method: ``"lloyd"``, ``"clvq"`` (mini-batch k-means with k-means++
      seeds, epochs until ``tol``) or ``"d4m"`` (D4M's exact quantizer:
      scikit-learn's MiniBatchKMeans with batch ``k``, one pass over each
      class's points in input order, initialised from its first ``k``
      points; :mod:`pqd_jax.quantization.d4m`). ``init``, ``n_init``,
      ``num_iters``, ``tol`` and ``batch_size`` do not apply to ``"d4m"``.
    weights: ``"mass"`` (cell mass), ``"sqrt"`` (∝ √count) or ``"uniform"``
      (D4M); normalised to mean 1 within each class.
    init: ``"kmeans++"`` (greedy, as scikit-learn; a pass over the class per
      seed), ``"kmeans||"`` (k-means‖: 5 rounds of ``k`` D²-sampled
      candidates reduced by weighted greedy k-means++; 7 passes whatever
      ``k``) or ``"random"``.
    n_init: independent seedings per class (vmapped); the run with the lowest
      distortion is kept, as scikit-learn's and ott's ``n_init``.
    num_iters: maximum Lloyd iterations (assignment passes), or CLVQ epochs.
    tol: relative tolerance. Lloyd stops once a pass lowers the class's
      distortion by at most ``tol`` relative to the previous pass (faiss's
      rule) or moves no centroid; CLVQ once an epoch moves the centroids by
      at most ``tol`` × the class variance in total (scikit-learn's rule).
    rng: PRNG key; class ``y`` uses ``fold_in(rng, y)``, so a class's result
      does not depend on which other classes are present. Default
      ``jax.random.key(0)``.
    mesh: a mesh with a ``"data"`` axis; default every device.
    batch_size: CLVQ mini-batch size (global, split over devices).
    chunk_size: points per distance chunk (memory O(chunk·k)); default keeps
      the ``[k, chunk]`` distance block at about 4 MB.
    class_batch_size: classes quantized side by side (a vmapped ``lax.map``
      batch; they iterate until the slowest of them converges). 1 lets every
      class stop on its own; 2 was fastest on a 2-core CPU (benchmarks), as
      XLA runs the small per-class matmuls of two classes in parallel. Raise
      it on accelerators.
    n_local_trials: k-means++ candidates per seed; default ``2 + ⌊ln k⌋``.

  Returns:
    A ``QuantizeResult``.

  Raises:
    ValueError: on bad input (named in the message).
  """
  checks.choice("method", method, METHODS)
  checks.choice("weights", weights, weights_lib.WEIGHT_SCHEMES)
  checks.choice("init", init, INITS)
  k = checks.integer("k", k)
  n_init = checks.integer("n_init", n_init)
  num_iters = checks.integer("num_iters", num_iters)
  batch_size = checks.integer("batch_size", batch_size)
  class_batch_size = checks.integer("class_batch_size", class_batch_size)
  if n_local_trials is not None:
    n_local_trials = checks.integer("n_local_trials", n_local_trials)
  tol = checks.number("tol", tol, minimum=0)
  if method == "d4m" and n_init != 1:
    raise ValueError(f"n_init={n_init} does not apply to method='d4m', "
                     "which seeds from each class's first k points.")
  rng = jax.random.key(0) if rng is None else checks.prng_key("rng", rng)
  mesh = sharding.data_mesh() if mesh is None else checks.mesh(mesh)
  arr = check_latents(latents, keep_lazy=True)
  lab = check_labels(labels, arr.shape[0])
  classes, sizes = np.unique(lab, return_counts=True)
  if k > sizes.min():
    small = classes[sizes < k]
    raise ValueError(
        f"k={k} is larger than the number of points of class(es) "
        f"{small[:10].tolist()} (smallest class has {int(sizes.min())} "
        "points); k must be <= the size of every class."
    )
  if classes[0] < np.iinfo(np.int32).min or classes[-1] > np.iinfo(
      np.int32).max:
    raise ValueError(
        f"labels must lie in the int32 range (they seed each class's "
        f"PRNG key), got labels from {classes[0]} to {classes[-1]}.")
  shards = sharding.num_data_shards(mesh)

  latent_shape = arr.shape[1:]
  if isinstance(arr, sharding.LazyRows):
    dtype = inputs.compute_dtype(arr.dtype)

    def read_flat(start, stop, rows=arr):
      out = np.asarray(rows.read(start, stop), dtype)
      inputs.check_values(out, start)
      return out.reshape(stop - start, -1)

    flat = sharding.LazyRows(read_flat,
                             (arr.shape[0], math.prod(arr.shape[1:])), dtype)
  else:
    flat = arr.reshape(arr.shape[0], -1).astype(
        inputs.compute_dtype(arr.dtype), copy=False)
  layout = _layout(lab, k, shards, chunk_size)
  grouped = _Grouped(flat, lab, layout)
  points = sharding.global_array(
      grouped, NamedSharding(mesh, P(None, sharding.DATA_AXIS, None)))
  mask = sharding.global_array(
      grouped.mask(), NamedSharding(mesh, P(None, sharding.DATA_AXIS)))
  local_batch = -(-batch_size // shards)
  fn = _compiled(mesh, method, k, num_iters, float(tol), init, n_init,
                 n_local_trials, local_batch, layout.chunk, class_batch_size)
  frame = _compiled_frame(mesh)(points, mask)
  frame_lib.check_spread(np.asarray(frame.scale), classes, flat.shape[1])
  out = fn(rng, classes.astype(np.uint32), points, mask, *frame)
  centroids, cell_weights = centroids_and_weights(frame, out.centroids,
                                                  out.counts, weights)
  return QuantizeResult(
      centroids=centroids.reshape(centroids.shape[:2] + latent_shape),
      weights=cell_weights,
      counts=out.counts,
      distortion=frame_lib.distortion_back(out.distortion, frame.scale),
      classes=classes,
      iterations=out.iterations,
      converged=out.converged,
  )
