"""CLVQ over a stream of labelled batches, for latents that do not fit in RAM.

``quantize_stream(make_batches, k)`` reads the data through a callable that
returns a fresh iterable of ``(latents [b, ...], labels [b])`` batches each
time it is called, and makes:

1. a seeding pass: per-class statistics (size, mean, variance) and a uniform
   random sample of ``init_size`` points per class (priority sampling, so the
   sample does not depend on where a class's points sit in the stream), on
   which Lloyd from k-means++ gives the seeds;
2. ``num_passes`` CLVQ passes: every batch is assigned to its classes'
   centroids at once and each centroid moves by the mini-batch k-means rule,
   step ``n_j / N_j`` (``N_j`` = points it has absorbed so far, starting
   from its cell count in the seeding sample);
3. an exact recount pass: every point assigned to its nearest final centroid,
   so counts, weights and distortion are exact. Nothing is dropped (D4M drops
   each class's tail buffer and keeps the running counts).

The stream's chunks are re-cut into fixed batches of ``batch_size`` rows
(across chunk boundaries, the last one padded), so the result does not depend
on how the reader chunks the data: streaming a dataset from disk gives the
same centroids as passing it as one in-memory array. Memory is
O(batch + C·K·D + C·init_size·D) (the sample kept in the input's dtype, so
half for float16 latents), independent of the stream length.
"""

import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from pqd_jax import checks
from pqd_jax.quantization import api as api_lib
from pqd_jax.quantization import weights as weights_lib

__all__ = ["quantize_stream"]

# Per-point centroid gathers are [sub, k, d]: at most this many floats.
_GATHER_ELEMENTS = 1 << 22


def _batches(make_batches, d_expected=None):
  """Validates and yields ``(flat [b, d] float, labels [b] int)``."""
  it = make_batches()
  if not isinstance(it, Iterable):
    raise ValueError(
        "make_batches() must return an iterable of (latents, labels) "
        f"batches, got {type(it).__name__}."
    )
  for i, batch in enumerate(it):
    try:
      latents, labels = batch
    except (TypeError, ValueError):
      raise ValueError(
          f"batch {i} is not a (latents, labels) pair: {type(batch)}."
      ) from None
    arr = api_lib.check_latents(latents)
    lab = api_lib.check_labels(labels, arr.shape[0])
    flat = arr.reshape(arr.shape[0], -1)
    if d_expected is not None and arr.shape[1:] != d_expected[1]:
      raise ValueError(
          f"batch {i} has latents of shape {arr.shape[1:]} but the first "
          f"batch had {d_expected[1]}."
      )
    yield arr.shape[1:], flat, lab


class _Reservoir:
  """Per-class uniform sample of fixed size by random priorities."""

  def __init__(self, size: int, seed: int):
    self.size = size
    self.gen = np.random.default_rng(seed)
    self.points: dict[int, np.ndarray] = {}
    self.prios: dict[int, np.ndarray] = {}

  def add(self, flat: np.ndarray, labels: np.ndarray) -> None:
    prio = self.gen.random(labels.shape[0])
    for c in np.unique(labels):
      sel = labels == c
      pts = flat[sel]
      if pts.dtype != np.float16:
        pts = pts.astype(np.float32)
      pr = prio[sel]
      if c in self.points:
        pts = np.concatenate([self.points[c], pts])
        pr = np.concatenate([self.prios[c], pr])
      if pr.shape[0] > self.size:
        keep = np.argpartition(pr, self.size)[:self.size]
        pts, pr = pts[keep], pr[keep]
      self.points[int(c)], self.prios[int(c)] = pts, pr


def _stream_kernel(cents, x, cls, *, sub):
  """Nearest own-class centroid of every point, and the cell sums.

  Args:
    cents: ``[C, k, d]`` float32.
    x: ``[b, d]`` points, ``b`` a multiple of ``sub``.
    cls: ``[b]`` int32 class index, ``C`` on padding.
    sub: points per gather.

  Returns:
    ``(sums [C*k, d], counts [C*k] int32, sse [C])``.
  """
  num_classes, k, d = cents.shape
  c_sq = jnp.sum(cents * cents, axis=-1)  # [C, k]
  xs = x.reshape(-1, sub, d)
  cs = cls.reshape(-1, sub)

  def body(carry, chunk):
    sums, counts, sse = carry
    xc, cc = chunk
    xc = xc.astype(jnp.float32)
    safe = jnp.minimum(cc, num_classes - 1)
    dist = c_sq[safe] - 2.0 * jnp.einsum("sd,skd->sk", xc, cents[safe])
    dmin = jnp.min(dist, axis=1)
    iota = jax.lax.broadcasted_iota(jnp.int32, dist.shape, 1)
    a = jnp.min(jnp.where(dist == dmin[:, None], iota, k), axis=1)
    seg = jnp.where(cc < num_classes, cc * k + a, num_classes * k)
    sums = sums + jax.ops.segment_sum(xc, seg, num_classes * k)
    counts = counts + jax.ops.segment_sum(
        jnp.ones_like(seg), seg, num_classes * k)
    err = jnp.maximum(dmin + jnp.sum(xc * xc, axis=-1), 0.0)
    sse = sse + jax.ops.segment_sum(err, cc, num_classes)
    return (sums, counts, sse), None

  init = (jnp.zeros((num_classes * k, d), jnp.float32),
          jnp.zeros((num_classes * k,), jnp.int32),
          jnp.zeros((num_classes,), jnp.float32))
  out, _ = jax.lax.scan(body, init, (xs, cs))
  return out


@functools.partial(jax.jit, donate_argnums=(0, 1))
def _update(cents, absorbed, present, x, local):
  """One mini-batch k-means step on the classes ``present`` in the batch.

  Only their centroids are read and written (the rest of ``cents`` is
  donated and updated in place), so a step costs O(batch + |present|·K·D)
  rather than O(C·K·D).

  Args:
    cents: ``[C, k, d]`` float32 (donated).
    absorbed: ``[C, k]`` points absorbed so far (donated).
    present: ``[u]`` distinct class indices: those in the batch, then absent
      ones as padding.
    x: ``[b, d]`` points.
    local: ``[b]`` position of each point's class in ``present``, ``u`` on
      padding rows.
  """
  sub_cents = cents[present]
  u, k, d = sub_cents.shape
  sums, counts, _ = _stream_kernel(sub_cents, x, local,
                                   sub=_sub_size(x.shape[0], k, d))
  sums = sums.reshape(u, k, d)
  counts = counts.reshape(u, k)
  sub_absorbed = absorbed[present] + counts
  rate = 1.0 / jnp.maximum(sub_absorbed, 1).astype(jnp.float32)
  n = counts.astype(jnp.float32)[..., None]
  new = sub_cents + (sums - n * sub_cents) * rate[..., None]
  # Padding entries of ``present`` are distinct absent classes: they get
  # zero counts and are written back unchanged.
  return cents.at[present].set(new), absorbed.at[present].set(sub_absorbed)


@functools.partial(jax.jit, donate_argnums=(0, 1))
def _recount(counts, sse, cents, present, x, local):
  """Adds a batch's exact cell counts and squared errors (present classes)."""
  sub_cents = cents[present]
  u, k, d = sub_cents.shape
  _, c, e = _stream_kernel(sub_cents, x, local,
                           sub=_sub_size(x.shape[0], k, d))
  return counts.at[present].add(c.reshape(u, k)), sse.at[present].add(e)


def _present(cs, num_classes):
  """``(present [u], local [b])`` for a batch.

  ``present`` lists the batch's classes (sorted), padded with distinct absent
  classes to ``u`` = the next power of two (at most ``num_classes``), so few
  shapes are compiled; ``local`` is each row's position in it (``u`` on
  padding rows).
  """
  real = cs[cs < num_classes]
  present = np.unique(real)
  u = min(1 << int(np.ceil(np.log2(max(len(present), 1)))), num_classes)
  local = np.searchsorted(present, np.minimum(cs, num_classes - 1))
  local = np.where(cs < num_classes, local, u).astype(np.int32)
  absent = np.setdiff1d(np.arange(num_classes), present)[:u - len(present)]
  return np.concatenate([present, absent]).astype(np.int32), local


def _sub_size(b: int, k: int, d: int) -> int:
  """Largest divisor of ``b`` with ``sub * k * d <= _GATHER_ELEMENTS``."""
  cap = max(1, _GATHER_ELEMENTS // (k * d))
  for sub in range(min(b, cap), 0, -1):
    if b % sub == 0:
      return sub
  return 1


def _class_index(labels, classes):
  idx = np.searchsorted(classes, labels)
  idx = np.minimum(idx, len(classes) - 1)
  unknown = classes[idx] != labels
  if unknown.any():
    raise ValueError(
        f"label(s) {np.unique(labels[unknown])[:5].tolist()} appeared after "
        "the seeding pass; make_batches() must yield the same data each call."
    )
  return idx.astype(np.int32)


def _fixed_batches(make_batches, shape, classes, batch):
  """``(x [batch, d], class index [batch])`` across chunk boundaries.

  The last batch is padded with class index ``C`` (ignored).
  """
  xs, cs, held = [], [], 0
  for _, flat, lab in _batches(make_batches, shape):
    xs.append(flat)
    cs.append(_class_index(lab, classes))
    held += len(lab)
    if held < batch:
      continue
    x, c = np.concatenate(xs), np.concatenate(cs)
    cut = len(c) - len(c) % batch
    for s in range(0, cut, batch):
      yield x[s:s + batch], c[s:s + batch]
    xs, cs, held = [x[cut:]], [c[cut:]], len(c) - cut
  if held:
    x, c = np.concatenate(xs), np.concatenate(cs)
    pad = batch - held
    yield (np.concatenate([x, np.zeros((pad, x.shape[1]), x.dtype)]),
           np.concatenate([c, np.full(pad, len(classes), np.int32)]))


def quantize_stream(
    make_batches: Callable[[], Iterable[tuple[Any, Any]]],
    k: int,
    *,
    weights: str = "mass",
    num_passes: int = 1,
    init: str = "kmeans++",
    n_init: int = 1,
    init_size: int | None = None,
    batch_size: int = 1024,
    seed_classes: int = 64,
    tol: float = 1e-4,
    rng: jax.Array | None = None,
    mesh: Mesh | None = None,
) -> api_lib.QuantizeResult:
  """CLVQ over a re-iterable stream of labelled batches.

  Args:
    make_batches: called once per pass; returns an iterable of
      ``(latents [b, *latent_shape], labels [b])`` with the same data (in any
      order) every time.
    k: centroids per class.
    weights: ``"mass"``, ``"sqrt"`` or ``"uniform"``.
    num_passes: CLVQ passes over the stream (≥ 1).
    init: seeding of the per-class sample, ``"kmeans++"`` or ``"random"``.
    n_init: seedings of the sample; the lowest-distortion one is kept.
    init_size: points per class sampled for the seeds (Lloyd from k-means++
      on the sample); default ``10 * k``. Memory ``C · init_size · D``.
    batch_size: rows per compiled step (the stream is re-cut into batches
      of this size across its chunks; the last one is padded).
    seed_classes: classes seeded together (memory of the seeding step
      ``seed_classes · init_size · D``).
    tol: relative tolerance for ``converged`` (last pass's centroid shift).
    rng: PRNG key for the sample and the seeds.
    mesh: the mesh of the seeding's in-memory quantize (default every
      device); in a multi-process run where each process streams its own
      classes, a mesh of the process's local devices.

  Returns:
    A ``QuantizeResult`` whose counts, weights and distortion come from the
    exact recount pass; ``iterations`` is ``num_passes``.

  Raises:
    ValueError: on bad input, or a class with fewer than ``k`` points.
  """
  checks.choice("weights", weights, weights_lib.WEIGHT_SCHEMES)
  checks.choice("init", init, api_lib.INITS)
  k = checks.integer("k", k)
  num_passes = checks.integer("num_passes", num_passes)
  n_init = checks.integer("n_init", n_init)
  batch_size = checks.integer("batch_size", batch_size)
  seed_classes = checks.integer("seed_classes", seed_classes)
  init_size = 10 * k if init_size is None else checks.integer(
      "init_size", init_size, minimum=k)
  tol = checks.number("tol", tol, minimum=0)
  if not callable(make_batches):
    raise ValueError(
        "make_batches must be a callable returning a fresh iterable of "
        f"(latents, labels) batches for each pass, got "
        f"{type(make_batches).__name__}."
    )
  rng = jax.random.key(0) if rng is None else checks.prng_key("rng", rng)
  if mesh is not None:
    checks.mesh(mesh)
  seed = int(jax.random.randint(rng, (), 0, 2**31 - 1))

  # Pass 0: sizes, moments and a uniform sample per class.
  reservoir = _Reservoir(init_size, seed)
  stats: dict[int, np.ndarray] = {}
  shape = None
  for latent_shape, flat, lab in _batches(make_batches):
    if shape is None:
      shape = (flat.shape[1], latent_shape)
    elif latent_shape != shape[1]:
      raise ValueError(
          f"a batch has latents of shape {latent_shape} but the first batch "
          f"had {shape[1]}."
      )
    reservoir.add(flat, lab)
    f64 = flat.astype(np.float64)
    for c in np.unique(lab):
      sel = lab == c
      row = np.array([sel.sum(), *f64[sel].sum(0), (f64[sel] ** 2).sum()])
      stats[int(c)] = stats[int(c)] + row if int(c) in stats else row
  if shape is None:
    raise ValueError("make_batches() yielded no batch; the stream is empty.")
  classes = np.array(sorted(stats))
  sizes = np.array([stats[c][0] for c in classes], np.int64)
  if k > sizes.min():
    raise ValueError(
        f"k={k} is larger than the number of points of class(es) "
        f"{classes[sizes < k][:10].tolist()}; k must be <= every class size."
    )
  d = shape[0]
  # Seeds: Lloyd on the sample, a group of classes at a time (class ``y``
  # uses ``fold_in(rng, y)`` whatever its group).
  seed_cents, seed_counts = [], []
  for g in range(0, len(classes), seed_classes):
    group = classes[g:g + seed_classes]
    sample_x = np.concatenate([reservoir.points[c] for c in group])
    sample_y = np.concatenate(
        [np.full(len(reservoir.points[c]), c) for c in group])
    seeds = api_lib.quantize(sample_x, sample_y, k, init=init, n_init=n_init,
                             rng=rng, tol=tol, mesh=mesh)
    seed_cents.append(np.asarray(seeds.centroids, np.float32).reshape(
        len(group), k, d))
    seed_counts.append(np.asarray(seeds.counts))
    del sample_x, sample_y
  del reservoir
  cents = jnp.asarray(np.concatenate(seed_cents))
  mean = np.stack([stats[c][1:1 + d] / stats[c][0] for c in classes])
  sq = np.array([stats[c][-1] / stats[c][0] for c in classes])
  tol_abs = tol * np.maximum(sq - (mean ** 2).sum(1), 0.0) / d

  # The seeds already summarise the sample: start the step counts there, so
  # the first batch refines them instead of overwriting them.
  absorbed = jnp.asarray(np.concatenate(seed_counts), jnp.int32)
  shift = None
  for _ in range(num_passes):
    before = np.asarray(cents)  # a copy: cents is donated to the steps
    for xs, cs in _fixed_batches(make_batches, shape, classes, batch_size):
      present, local = _present(cs, len(classes))
      cents, absorbed = _update(cents, absorbed, present, xs, local)
    shift = np.asarray(jnp.sum((cents - before) ** 2, axis=(1, 2)))

  counts = jnp.zeros((len(classes), k), jnp.int32)
  sse = jnp.zeros((len(classes),), jnp.float32)
  for xs, cs in _fixed_batches(make_batches, shape, classes, batch_size):
    present, local = _present(cs, len(classes))
    counts, sse = _recount(counts, sse, cents, present, xs, local)
  total = np.asarray(counts).sum(1)
  if not np.array_equal(total, sizes):
    raise ValueError(
        "make_batches() yielded different data on the recount pass "
        f"({total.tolist()[:10]} points per class vs {sizes.tolist()[:10]})."
    )
  return api_lib.QuantizeResult(
      centroids=cents.reshape((len(classes), k) + shape[1]),
      weights=weights_lib.cell_weights(counts, weights),
      counts=counts,
      distortion=sse / jnp.asarray(sizes, jnp.float32),
      classes=classes,
      iterations=jnp.full((len(classes),), num_passes, jnp.int32),
      converged=jnp.asarray(shift <= tol_abs),
  )
