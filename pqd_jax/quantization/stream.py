"""CLVQ over a stream of labelled batches, for latents that do not fit in RAM.

``quantize_stream(make_batches, k)`` reads the data through a callable that
returns a fresh iterable of ``(latents [b, ...], labels [b])`` batches each
time it is called, and makes:

1. a seeding pass: per-class statistics (size, mean, variance, spread) and a
   uniform random sample of ``init_size`` points per class (priority
   sampling, so the sample does not depend on where a class's points sit in
   the stream), on which Lloyd from k-means++ gives the seeds. Every later
   step works in each class's frame (its points centred and scaled into
   [-1, 1], :mod:`pqd_jax.quantization.frame`), so an offset or scale of the
   data loses no precision;
2. ``num_passes`` CLVQ passes: every batch is assigned to its classes'
   centroids at once and each centroid moves by the mini-batch k-means rule,
   step ``n_j / N_j`` (``N_j`` = points it has absorbed so far, starting
   from its cell count in the seeding sample);
3. an exact recount: every point assigned to its nearest final centroid, so
   counts, weights and distortion are exact. Nothing is dropped (D4M drops
   each class's tail buffer and keeps the running counts). A class's
   centroids are final once the last CLVQ pass has stepped on its last row,
   so the batches of that pass are recounted as soon as their classes are
   final, from the copies its steps read: a class-major stream (each class's
   rows together, as the pipeline's class files) is read ``num_passes + 1``
   times in all. Classes whose batches could not all be held (a shuffled
   stream) are recounted by one more pass.

The stream's chunks are re-cut into fixed batches of ``batch_size`` rows
(across chunk boundaries, the last one padded), so the result does not depend
on how the reader chunks the data: streaming a dataset from disk gives the
same centroids as passing it as one in-memory array. Memory is
O(held_batches·(batch + chunk) + C·K·D + C·init_size·D) (the sample kept in
the input's dtype, so half for float16 latents), independent of the stream
length.
"""

import collections
import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from pqd_jax import checks, sharding
from pqd_jax.quantization import api as api_lib
from pqd_jax.quantization import clvq as clvq_lib
from pqd_jax.quantization import frame as frame_lib
from pqd_jax.quantization import inputs
from pqd_jax.quantization import stream_stats as stats_lib
from pqd_jax.quantization import stream_steps as steps
from pqd_jax.quantization import weights as weights_lib

__all__ = ["StreamState", "quantize_stream"]


class StreamState(NamedTuple):
  """What :func:`quantize_stream` knows after each pass over the stream.

  ``C`` classes, ``k`` centroids per class, ``d`` the flattened latent size.
  The codebook, ``shift`` and ``sse`` are in the classes' frames. The
  counting pass sets the first six fields, the seeding the codebook,
  each CLVQ pass the codebook and ``shift``, the recount ``counts`` and
  ``sse``; fields not set yet are ``None``.

  Attributes:
    latent_shape: shape of one latent (``d`` entries in all).
    classes: ``[C]`` the sorted distinct labels.
    sizes: ``[C]`` int64 points per class.
    frame: each class's mean and scale (``ClassFrame``).
    tol_abs: ``[C]`` float64 tolerance on a pass's summed squared centroid
      shift: ``tol`` times the class's mean per-dimension variance.
    sample: label → ``[≤ init_size, d]`` uniform sample of the class
      (float16 or float32), for the seeds; ``None`` once seeded.
    codebook: ``[C, k, d]`` float32 centroids and ``[C, k]`` int32 points
      each has absorbed (the seeding sample's cells count).
    shift: ``[C]`` float32 summed squared centroid shift of the last CLVQ
      pass.
    counts: ``[C, k]`` int32 exact cell counts of the final centroids.
    sse: ``[C]`` float32 summed squared distance to them.
  """

  latent_shape: tuple[int, ...]
  classes: np.ndarray
  sizes: np.ndarray
  frame: frame_lib.ClassFrame
  tol_abs: np.ndarray
  sample: dict[int, np.ndarray] | None
  codebook: clvq_lib.Codebook | None = None
  shift: np.ndarray | None = None
  counts: jax.Array | None = None
  sse: jax.Array | None = None


def _batches(make_batches, latent_shape=None):
  """Validates and yields ``(latent_shape, flat, labels, in_place)``.

  ``flat [b, d]``, ``labels [b]`` int. With ``latent_shape``, a batch of
  another latent shape is refused. The values are checked on the device by
  the first pass (:class:`~pqd_jax.quantization.stream_stats.ClassMoments`)
  and by the recount, not here. ``in_place`` says whether the chunk's rows
  may be used without a copy (:func:`_in_place`).
  """
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
    arr = inputs.check_latents(latents, values=False)
    lab = inputs.check_labels(labels, arr.shape[0])
    flat = arr.reshape(arr.shape[0], -1)
    if latent_shape is not None and arr.shape[1:] != latent_shape:
      raise ValueError(
          f"batch {i} has latents of shape {arr.shape[1:]} but the first "
          f"batch had {latent_shape}."
      )
    yield arr.shape[1:], flat, lab, _in_place(arr)


def _in_place(arr: np.ndarray) -> bool:
  """Whether a reader's chunk may be used as the batches it holds.

  A C-contiguous array that the reader froze (:func:`pqd_jax.sharding.
  freeze`): its memory will not change, and it is not a memory map (whose
  every page would fault on the device's first read).
  """
  return arr.flags.c_contiguous and sharding.frozen(arr)


def _class_index(labels, classes):
  """``[b]`` int32 position of each label in ``classes``."""
  idx = np.searchsorted(classes, labels)
  idx = np.minimum(idx, len(classes) - 1)
  unknown = classes[idx] != labels
  if unknown.any():
    raise ValueError(
        f"label(s) {np.unique(labels[unknown])[:5].tolist()} appeared after "
        "the seeding pass; make_batches() must yield the same data each call."
    )
  return idx.astype(np.int32)


def _recut(make_batches, batch, latent_shape=None):
  """``(latent_shape, flat [batch, d], labels [batch])`` across chunks.

  Every batch has ``batch`` rows but the last, so what is computed per
  batch does not depend on how the reader chunks the data. A whole batch
  inside a frozen chunk (:func:`_in_place`) is a view of it, if aligned
  as a CPU device takes it without a copy. Other rows are copied once, into
  a batch of their own that nothing writes afterwards (the reader may
  reuse its other chunks' memory) and that a CPU device takes without
  another copy (:func:`pqd_jax.sharding.host_empty`).
  """
  shape, out, labels, fill = latent_shape, None, [], 0
  for chunk_shape, flat, lab, in_place in _batches(make_batches,
                                                   latent_shape):
    if shape is None:
      shape = chunk_shape
    elif chunk_shape != shape:
      raise ValueError(
          f"a batch has latents of shape {chunk_shape} but the first batch "
          f"had {shape}."
      )
    start = 0
    while start < len(lab):
      if in_place and not fill and len(lab) - start >= batch:
        view = flat[start:start + batch]
        if sharding.host_aligned(view):
          yield shape, view, lab[start:start + batch]
          start += batch
          continue
      if out is None:
        out = sharding.host_empty((batch, flat.shape[1]), flat.dtype)
      elif out.dtype != np.promote_types(out.dtype, flat.dtype):
        wider = sharding.host_empty(out.shape, np.promote_types(out.dtype,
                                                                flat.dtype))
        wider[:fill] = out[:fill]
        out = wider
      take = min(batch - fill, len(lab) - start)
      out[fill:fill + take] = flat[start:start + take]
      labels.append(lab[start:start + take])
      fill, start = fill + take, start + take
      if fill == batch:
        yield shape, out, np.concatenate(labels)
        out, labels, fill = None, [], 0
  if fill:
    yield shape, out[:fill], np.concatenate(labels)


def _put(batch: np.ndarray) -> jax.Array:
  """A re-cut batch on the device, sharing its memory where it can.

  The re-cut batches are new arrays that nothing writes afterwards, so a
  CPU device may use them in place (no copy); a numpy argument of a jitted
  call is copied more slowly still. Wider floats are cast to float32 here,
  values beyond its range to inf (which the first pass refuses).
  """
  if batch.dtype.itemsize > 4:
    narrow = sharding.host_empty(batch.shape, np.float32)
    with np.errstate(over="ignore"):
      narrow[...] = batch
    batch = narrow
  return jax.device_put(batch, may_alias=True)


def _fixed_batches(make_batches, latent_shape, classes, batch):
  """``(x [batch, d], class index [batch])`` across chunk boundaries.

  The last batch is padded with class index ``C`` (ignored).
  """
  for _, x, lab in _recut(make_batches, batch, latent_shape):
    c = _class_index(lab, classes)
    yield _padded(x, batch), np.concatenate(
        [c, np.full(batch - len(c), len(classes), np.int32)])


def _padded(x: np.ndarray, batch: int) -> np.ndarray:
  """``x [b, d]`` with zero rows up to ``batch`` (one compiled shape)."""
  if len(x) == batch:
    return x
  out = sharding.host_zeros((batch, x.shape[1]), x.dtype)
  out[:len(x)] = x
  return out


def _count_pass(make_batches, k, init_size, seed, tol,
                batch_size) -> StreamState:
  """Pass 0: the classes, their sizes and frames, a uniform sample of each.

  Read in batches of ``batch_size`` rows across the reader's chunks, so the
  statistics do not depend on the chunking.

  Raises:
    ValueError: on a batch of another latent shape, an empty stream, a
      class of fewer than ``k`` points, or one whose spread overflows.
  """
  reservoir = stats_lib.Reservoir(init_size, seed)
  moments = stats_lib.ClassMoments()
  shape = None
  for latent_shape, flat, lab in _recut(make_batches, batch_size):
    shape = latent_shape
    reservoir.add(flat, lab)
    flat = _padded(flat, batch_size)
    moments.add(_put(flat), flat, lab)
  if shape is None:
    raise ValueError("make_batches() yielded no batch; the stream is empty.")
  classes = moments.classes()
  sizes, mean, scale, variance = moments.summary(classes)
  if k > sizes.min():
    raise ValueError(
        f"k={k} is larger than the number of points of class(es) "
        f"{classes[sizes < k][:10].tolist()}; k must be <= every class size."
    )
  d = math.prod(shape)
  frame_lib.check_spread(scale, classes, d)
  return StreamState(
      latent_shape=shape, classes=classes, sizes=sizes,
      frame=frame_lib.ClassFrame(jnp.asarray(mean, jnp.float32),
                                 jnp.asarray(scale, jnp.float32)),
      tol_abs=tol * variance / d / np.square(scale),
      sample=reservoir.points)


def _seed(state: StreamState, k: int, *, group_size: int,
          **quantize_kwargs) -> StreamState:
  """Seeds: Lloyd on the sample, at most ``group_size`` classes at a time.

  Class ``y`` uses ``fold_in(rng, y)`` whatever its group. ``quantize``
  works in the sample's own frame; its centroids are moved into the
  stream's frame in float64. The seeds' cell counts in the sample start the
  step counts, so the first batch refines the seeds instead of overwriting
  them.
  """
  d = math.prod(state.latent_shape)
  num_classes = len(state.classes)
  num_groups = -(-num_classes // group_size)
  size = -(-num_classes // num_groups)  # groups of equal size
  seed_cents, seed_counts = [], []
  for g in range(0, num_classes, size):
    group = state.classes[g:g + size]
    # A short last group is filled up with earlier classes (their seeds
    # dropped) so that every group compiles to the same shape.
    filled = np.concatenate([group, state.classes[:size - len(group)]])
    sample_x = np.concatenate([state.sample[c] for c in filled])
    sample_y = np.concatenate(
        [np.full(len(state.sample[c]), c) for c in filled])
    seeds = api_lib.quantize(sample_x, sample_y, k, **quantize_kwargs)
    rows = np.searchsorted(np.asarray(seeds.classes), group)
    cents = np.asarray(seeds.centroids, np.float64)[rows].reshape(
        len(group), k, d)
    shift = np.asarray(state.frame.shift[g:g + size], np.float64)
    scale = np.asarray(state.frame.scale[g:g + size], np.float64)
    seed_cents.append(((cents - shift[:, None]) / scale[:, None, None]
                       ).astype(np.float32))
    seed_counts.append(np.asarray(seeds.counts)[rows])
    del sample_x, sample_y
  book = clvq_lib.Codebook(
      jnp.asarray(np.concatenate(seed_cents)),
      jnp.asarray(np.concatenate(seed_counts), jnp.int32))
  return state._replace(sample=None, codebook=book)


def _clvq_steps(state: StreamState, make_batches, batch_size: int):
  """Runs a CLVQ pass; yields the codebook after each batch's step.

  Yields:
    ``(book, (x, present, local, cs))``: the codebook after the step (the
    one before it was donated to it), and the batch as the step read it
    (``x [batch, d]`` on the device, ``present``, ``local`` and the rows'
    class indices ``cs`` as for :func:`~.stream_steps.update`).
  """
  book = state.codebook
  for xs, cs in _fixed_batches(make_batches, state.latent_shape,
                               state.classes, batch_size):
    present, local = steps.present_classes(cs, len(state.classes))
    x = _put(xs)
    book = steps.update(book, state.frame, present, x, local)
    yield book, (x, present, local, cs)


def _clvq_pass(state: StreamState, make_batches,
               batch_size: int) -> StreamState:
  """One CLVQ pass: a mini-batch k-means step per batch of the stream."""
  before = np.array(state.codebook.centroids)  # a copy: steps donate it
  book = state.codebook
  for stepped, _ in _clvq_steps(state, make_batches, batch_size):
    book = stepped
  return state._replace(codebook=book, shift=_shift(book, before))


def _shift(book: clvq_lib.Codebook, before: np.ndarray) -> np.ndarray:
  # On the host: no compile for a once-per-pass sum.
  return np.square(np.asarray(book.centroids) - before).sum((1, 2))


class _HeldRecount:
  """The exact recount of the last CLVQ pass's batches, as they become final.

  A class's centroids are final once the last pass has stepped on its last
  row (its size is known from the first pass). A batch is recounted as soon
  as every class in it is final, from the device copy its step read, in the
  stream's order (so the sums are those of a recount pass). At most
  ``limit`` batches wait; beyond that the oldest is dropped and its classes
  are left to a recount pass over the stream (``lost``): every class of a
  shuffled stream, none of a class-major one whose classes each span at
  most ``limit + 1`` batches.
  """

  def __init__(self, sizes: np.ndarray, k: int, limit: int):
    self.sizes = sizes
    self.limit = limit
    self.counts = jnp.zeros((len(sizes), k), jnp.int32)
    self.sse = jnp.zeros((len(sizes),), jnp.float32)
    self.seen = np.zeros(len(sizes), np.int64)
    self.lost = np.zeros(len(sizes), bool)
    self.held = collections.deque()

  def add(self, batch, book: clvq_lib.Codebook,
          frame: frame_lib.ClassFrame) -> None:
    """Holds a stepped batch; recounts every held batch now final.

    Raises:
      ValueError: if a class has more rows than the first pass counted.
    """
    x, present, local, cs = batch
    num_classes = len(self.sizes)
    mine = np.unique(cs[cs < num_classes])
    self.seen[mine] += np.bincount(cs[cs < num_classes],
                                   minlength=num_classes)[mine]
    if (self.seen[mine] > self.sizes[mine]).any():
      raise _changed(self.seen, self.sizes)
    self.held.append((x, present, local, mine))
    waiting = collections.deque()
    for held in self.held:
      x, present, local, mine = held
      if self.lost[mine].any():
        self.lost[mine] = True
      elif (self.seen[mine] == self.sizes[mine]).all():
        self.counts, self.sse = steps.recount(
            self.counts, self.sse, book.centroids, frame, present, x, local)
      else:
        waiting.append(held)
    while len(waiting) > self.limit:
      self.lost[waiting.popleft()[3]] = True
    self.held = waiting


def _changed(seen: np.ndarray, sizes: np.ndarray) -> ValueError:
  return ValueError(
      "make_batches() yielded different data on a later pass "
      f"({seen.tolist()[:10]} points per class vs "
      f"{sizes.tolist()[:10]} on the first pass); it must yield the same "
      "data each call.")


def _last_pass(state: StreamState, make_batches, batch_size: int,
               held_batches: int) -> StreamState:
  """The last CLVQ pass with the exact recount folded in where it can be.

  Batches are recounted by :class:`_HeldRecount` as their classes become
  final; the classes it could not hold are recounted by one more pass.

  Raises:
    ValueError: if the stream's data changed since the first pass.
  """
  before = np.array(state.codebook.centroids)  # a copy: steps donate it
  book = state.codebook
  recount = _HeldRecount(state.sizes, book.absorbed.shape[1], held_batches)
  for book, batch in _clvq_steps(state, make_batches, batch_size):
    recount.add(batch, book, state.frame)
  if not np.array_equal(recount.seen, state.sizes):
    raise _changed(recount.seen, state.sizes)
  state = state._replace(codebook=book, shift=_shift(book, before))
  # Every class is final now: each held batch was recounted or dropped.
  lost, counts, sse = recount.lost, recount.counts, recount.sse
  if lost.any():
    counts = jnp.where(lost[:, None], 0, counts)
    sse = jnp.where(lost, 0.0, sse)
    counts, sse = _recount_pass(state, make_batches, batch_size, lost,
                                counts, sse)
  return _checked(state, counts, sse)


def _recount_pass(state: StreamState, make_batches, batch_size: int,
                  which: np.ndarray, counts: jax.Array,
                  sse: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Adds the exact counts of the classes ``which`` (``[C]`` bool) by a pass.

  Every point of those classes goes to its nearest final centroid; the
  rows of other classes are skipped.
  """
  num_classes = len(state.classes)
  for xs, cs in _fixed_batches(make_batches, state.latent_shape,
                               state.classes, batch_size):
    cs = np.where(which[np.minimum(cs, num_classes - 1)], cs, num_classes)
    if (cs == num_classes).all():
      continue
    present, local = steps.present_classes(cs, num_classes)
    counts, sse = steps.recount(counts, sse, state.codebook.centroids,
                                state.frame, present, _put(xs), local)
  return counts, sse


def _checked(state: StreamState, counts: jax.Array,
             sse: jax.Array) -> StreamState:
  """The state with the recount's ``counts`` and ``sse``, once checked.

  Raises:
    ValueError: on a non-finite value or class sizes that changed since the
      first pass.
  """
  if not np.isfinite(np.asarray(sse)).all():
    raise ValueError(
        "make_batches() yielded NaN or Inf on a later pass than the first "
        "(the first pass found every value finite); it must yield the same "
        "data each call.")
  total = np.asarray(counts).sum(1)
  if not np.array_equal(total, state.sizes):
    raise _changed(total, state.sizes)
  return state._replace(counts=counts, sse=sse)


def _result(state: StreamState, weights: str,
            num_passes: int) -> api_lib.QuantizeResult:
  """The ``QuantizeResult`` of the final state."""
  num_classes, k = state.counts.shape
  centroids, cell_weights = api_lib.centroids_and_weights(
      state.frame, state.codebook.centroids, state.counts, weights)
  return api_lib.QuantizeResult(
      centroids=centroids.reshape((num_classes, k) + state.latent_shape),
      weights=cell_weights,
      counts=state.counts,
      distortion=frame_lib.distortion_back(state.sse, state.frame.scale,
                                           state.sizes),
      classes=state.classes,
      iterations=jnp.full((num_classes,), num_passes, jnp.int32),
      converged=jnp.asarray(state.shift <= state.tol_abs),
  )


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
    seed_classes: int = 32,
    held_batches: int = 4,
    tol: float = 1e-4,
    rng: jax.Array | None = None,
    mesh: Mesh | None = None,
) -> api_lib.QuantizeResult:
  """CLVQ over a re-iterable stream of labelled batches.

  Args:
    make_batches: called once per pass; returns an iterable of
      ``(latents [b, *latent_shape], labels [b])`` with the same data (in any
      order) every time. Rows are copied into batches of ``batch_size``,
      except where a whole batch lies in an array that the reader froze
      with :func:`pqd_jax.sharding.freeze` (as
      :func:`pqd_jax.autoencoder.latents.stream` does): such a batch is
      used in place, and up to ``held_batches + 1`` such chunks stay in
      memory.
    k: centroids per class.
    weights: ``"mass"``, ``"sqrt"`` or ``"uniform"``.
    num_passes: CLVQ passes over the stream (≥ 1).
    init: seeding of the per-class sample, one of ``quantize``'s inits.
    n_init: seedings of the sample; the lowest-distortion one is kept.
    init_size: points per class sampled for the seeds (Lloyd from k-means++
      on the sample); default ``10 * k``. Memory ``C · init_size · D``.
    batch_size: rows per compiled step (the stream is re-cut into batches
      of this size across its chunks; the last one is padded).
    seed_classes: classes seeded together (memory of the seeding step
      ``seed_classes · init_size · D``; the seeds do not depend on it).
      Each group's call makes float32 copies of its sample; with 32
      classes rather than 64 the seeding took 9–20% less time on a CPU
      (``benchmarks/RESULTS.md``).
    held_batches: batches of the last CLVQ pass held until their classes'
      centroids are final, to be recounted without reading them again: a
      class-major stream whose classes each span at most
      ``held_batches + 1`` batches needs no recount pass. 0 holds none:
      the recount is a pass over the stream.
    tol: relative tolerance for ``converged`` (last pass's centroid shift).
    rng: PRNG key for the sample and the seeds.
    mesh: the mesh of the seeding's in-memory quantize (default every
      device); in a multi-process run where each process streams its own
      classes, a mesh of the process's local devices.

  Returns:
    A ``QuantizeResult`` whose counts, weights and distortion come from the
    exact recount; ``iterations`` is ``num_passes``.

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
  held_batches = checks.integer("held_batches", held_batches, minimum=0)
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

  state = _count_pass(make_batches, k, init_size, seed, tol, batch_size)
  state = _seed(state, k, group_size=seed_classes, init=init, n_init=n_init,
                rng=rng, tol=tol, mesh=mesh)
  for _ in range(num_passes - 1):
    state = _clvq_pass(state, make_batches, batch_size)
  if held_batches:
    state = _last_pass(state, make_batches, batch_size, held_batches)
  else:
    state = _clvq_pass(state, make_batches, batch_size)
    num_classes, k = state.codebook.absorbed.shape
    state = _checked(state, *_recount_pass(
        state, make_batches, batch_size, np.ones(num_classes, bool),
        jnp.zeros((num_classes, k), jnp.int32),
        jnp.zeros((num_classes,), jnp.float32)))
  return _result(state, weights, num_passes)
