"""What the first pass of :func:`pqd_jax.quantize_stream` learns per class.

A uniform sample of each class (for the seeds) and its moments: size, mean,
variance and largest deviation, which give the class's frame
(:mod:`pqd_jax.quantization.frame`). The moments are summed relative to the
class's first point (differences of nearby float32 numbers are exact), so a
class far from the origin keeps its variance (no ``E[x²] - E[x]²``
cancellation); each batch is reduced in one compiled pass and the batches
are accumulated in float64.
"""

import jax
import jax.numpy as jnp
import numpy as np

from pqd_jax.quantization import stream_steps as steps

__all__ = ["ClassMoments", "Reservoir", "class_runs"]


def class_runs(labels: np.ndarray) -> list[tuple[int, np.ndarray | slice]]:
  """``[(class, rows)]`` of a batch, each class once.

  A slice per class when each class's rows are contiguous (a class-major
  stream: no copy), else an index array per class.
  """
  labels = np.asarray(labels)
  if labels.size == 0:
    return []
  cuts = np.flatnonzero(labels[1:] != labels[:-1]) + 1
  starts = np.concatenate([[0], cuts])
  stops = np.concatenate([cuts, [len(labels)]])
  if len(np.unique(labels[starts])) == len(starts):  # each class one run
    return [(int(labels[a]), slice(int(a), int(b)))
            for a, b in zip(starts, stops, strict=True)]
  return [(int(c), np.flatnonzero(labels == c)) for c in np.unique(labels)]


class Reservoir:
  """Per-class uniform sample of fixed size by random priorities.

  Every point gets a priority (uniform, drawn in stream order); a class
  keeps its ``size`` lowest. Only the points that enter are copied, each
  into the slot of the point it evicts in a buffer of ``size`` rows per
  class: a point above the class's current highest kept priority cannot
  enter, and of a batch's points only those among the ``size`` lowest so
  far do. :attr:`points` lists each sample by priority, so it does not
  depend on how the stream is chunked. The sample keeps float16 points as
  float16 and casts others to float32.
  """

  def __init__(self, size: int, seed: int):
    self.size = size
    self.gen = np.random.default_rng(seed)
    self._points: dict[int, np.ndarray] = {}  # [size, d], first rows used
    self._prios: dict[int, np.ndarray] = {}  # [≤ size] of the used rows

  def add(self, flat: np.ndarray, labels: np.ndarray) -> None:
    """Offers the batch ``flat [b, d]`` with class ``labels [b]``."""
    prio = self.gen.random(labels.shape[0])
    dtype = np.float16 if flat.dtype == np.float16 else np.float32
    for c, rows in class_runs(labels):
      rows = np.arange(len(labels))[rows] if isinstance(rows, slice) else rows
      pr = prio[rows]
      old_pr = self._prios.get(c, np.empty(0))
      if len(old_pr) >= self.size:
        enters = pr < old_pr.max()
        rows, pr = rows[enters], pr[enters]
        if not len(rows):
          continue
      both = np.concatenate([old_pr, pr])
      keep = np.argsort(both, kind="stable")[:self.size]
      entering = keep[keep >= len(old_pr)]
      # The evicted rows' slots, then the unused ones, take the entering
      # points.
      kept = np.zeros(len(keep), bool)
      kept[keep[keep < len(old_pr)]] = True
      slots = np.flatnonzero(~kept)
      buf = self._buffer(c, flat.shape[1], dtype)
      with np.errstate(over="ignore"):  # inf, refused by ClassMoments
        buf[slots] = flat[rows[entering - len(old_pr)]]
      new_pr = np.empty(len(keep))
      new_pr[:len(old_pr)] = old_pr
      new_pr[slots] = both[entering]
      self._prios[c] = new_pr

  def _buffer(self, c: int, d: int, dtype) -> np.ndarray:
    """Class ``c``'s ``[size, d]`` buffer, widened to hold ``dtype``."""
    buf = self._points.get(c)
    if buf is None:
      buf = self._points[c] = np.empty((self.size, d), dtype)
    elif np.promote_types(buf.dtype, dtype) != buf.dtype:
      buf = self._points[c] = buf.astype(np.promote_types(buf.dtype, dtype))
    return buf

  @property
  def points(self) -> dict[int, np.ndarray]:
    """Each class's sample ``[≤ size, d]``, by increasing priority.

    The samples are sorted in their buffers (views of them are returned),
    so they take no more memory than while sampling.
    """
    out = {}
    for c, pr in self._prios.items():
      order = np.argsort(pr, kind="stable")
      buf = self._points[c]
      buf[:len(order)] = buf[order]
      self._prios[c] = pr[order]
      out[c] = buf[:len(order)]
    return out


@jax.jit
def _batch_moments(x: jnp.ndarray, local: jnp.ndarray, refs: jnp.ndarray):
  """Per-class moments of a batch relative to each class's reference point.

  Read in blocks of rows whose float32 copy stays in cache, as the stream's
  steps (:func:`pqd_jax.quantization.stream_steps.block_rows`).

  Args:
    x: ``[b, d]`` points.
    local: ``[b]`` int32 position of each point's class in ``refs``
      (``u`` on padding rows).
    refs: ``[u, d]`` float32 reference points.

  Returns:
    ``sums [u, d]`` of ``x - ref``, ``squares [u]`` summed ``|x - ref|²``,
    ``deviation [u]`` largest ``|x - ref|`` entry, all float32, and
    ``finite [b]``: whether each row is finite in float32.
  """
  u, d = refs.shape
  rows = steps.block_rows(x.shape[0], d)

  def block(carry, chunk):
    sums, squares, deviation = carry
    xb, lb = chunk
    own = lb[:, None] == jnp.arange(u)[None]  # [rows, u], none on padding
    if u <= steps.DENSE_CLASSES:
      # Products and matmuls with the one-hot (exact: one nonzero term per
      # entry) run several times faster than a gather and a segment sum.
      hot = own.astype(jnp.float32)
      diff = xb.astype(jnp.float32) - steps.rows_of(hot, refs)
      sums = sums + hot.T @ diff
    else:
      diff = xb.astype(jnp.float32) - refs[jnp.minimum(lb, u - 1)]
      sums = sums + jax.ops.segment_sum(diff, lb, u + 1)[:u]
    square = jnp.sum(diff * diff, axis=1)
    largest = jnp.max(jnp.abs(diff), axis=1)
    # Whether every entry is finite, from the two reductions, without a
    # third pass over the block: a NaN makes the sum of squares NaN (XLA's
    # CPU maximum may skip it), an inf makes the largest entry inf (the sum
    # of squares alone would also be inf for large finite entries).
    finite = jnp.isfinite(largest) & ~jnp.isnan(square)
    squares = squares + jnp.sum(jnp.where(own, square[:, None], 0.0), axis=0)
    deviation = jnp.maximum(
        deviation, jnp.max(jnp.where(own, largest[:, None], 0.0), axis=0))
    return (sums, squares, deviation), finite

  init = (jnp.zeros((u, d), jnp.float32), jnp.zeros((u,), jnp.float32),
          jnp.zeros((u,), jnp.float32))
  (sums, squares, deviation), finite = jax.lax.scan(
      block, init, (x.reshape(-1, rows, d), local.reshape(-1, rows)))
  return sums, squares, deviation, finite.reshape(-1)


class ClassMoments:
  """Per-class size, sums and largest deviation relative to a first point.

  Each batch is reduced in one compiled pass in float32, per class relative
  to the class's first point (which its points are close to, so the
  differences lose nothing to an offset); the batches are accumulated in
  float64 on the host, one batch behind the device so that reading a
  batch's result does not stall the next. Rows that are not finite in
  float32 are refused.
  """

  def __init__(self):
    self.ref: dict[int, np.ndarray] = {}  # [d] float32, the first point
    self.size: dict[int, int] = {}
    self.sum: dict[int, np.ndarray] = {}  # [d] float64 sum of x - ref
    self.sum_sq: dict[int, float] = {}  # sum of |x - ref|^2
    self.deviation: dict[int, float] = {}  # max |x - ref| over entries
    self._rows = 0  # rows offered so far, to number bad rows
    self._pending = None

  def add(self, batch: jax.Array, flat: np.ndarray,
          labels: np.ndarray) -> None:
    """Adds the batch ``flat [b, d]`` with class ``labels [≤ b]``.

    Rows of ``flat`` past the labels are padding (a batch padded to a
    fixed size compiles once).

    Args:
      batch: ``flat`` on the device.
      flat: ``[b, d]`` the batch on the host (its classes' first points are
        read from it).
      labels: ``[≤ b]`` the classes of its first rows.

    Raises:
      ValueError: if a row of the previous batch is not finite in float32.
    """
    labels = np.asarray(labels)
    rows = len(labels)
    present, first = np.unique(labels, return_index=True)
    for c, i in zip(present.tolist(), first.tolist(), strict=True):
      if c not in self.ref:
        with np.errstate(over="ignore"):  # beyond float32: inf, refused
          ref = np.array(flat[i], np.float32)  # a copy: not the batch's
        # A non-finite first point is refused with its batch; a zero
        # reference keeps it from spreading into other classes' rows.
        self.ref[c] = ref if np.isfinite(ref).all() else np.zeros_like(ref)
        self.size[c], self.sum[c] = 0, np.zeros(flat.shape[1])
        self.sum_sq[c], self.deviation[c] = 0.0, 0.0
    u = steps.padded_classes(len(present))
    local = np.full(flat.shape[0], u, np.int32)
    local[:rows] = np.searchsorted(present, labels)
    refs = np.zeros((u, flat.shape[1]), np.float32)
    refs[:len(present)] = [self.ref[c] for c in present.tolist()]
    out = _batch_moments(batch, local, refs)
    self._take()
    self._pending = (out, present, np.bincount(local[:rows],
                                               minlength=len(present)), rows)

  def _take(self) -> None:
    """Accumulates the pending batch's result on the host."""
    if self._pending is None:
      return
    (sums, squares, deviation, finite), present, sizes, rows = self._pending
    self._pending = None
    finite = np.asarray(finite)[:rows]
    if not finite.all():
      bad = np.flatnonzero(~finite) + self._rows
      raise ValueError(
          f"latents contain NaN or Inf (or values beyond float32's range) "
          f"in {bad.size} rows of the stream (first rows: "
          f"{bad[:5].tolist()}).")
    self._rows += rows
    sums, squares, deviation = (np.asarray(sums, np.float64), np.asarray(
        squares, np.float64), np.asarray(deviation, np.float64))
    for j, c in enumerate(present.tolist()):
      self.size[c] += int(sizes[j])
      self.sum[c] += sums[j]
      self.sum_sq[c] += squares[j]
      self.deviation[c] = max(self.deviation[c], deviation[j])

  def classes(self) -> np.ndarray:
    """``[C]`` the sorted labels seen."""
    self._take()
    return np.array(sorted(self.ref))

  def summary(self, classes: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sizes, means, scales and variances of ``classes``.

    Returns:
      ``sizes [C]`` int64; ``mean [C, d]``, ``scale [C]`` and ``variance
      [C]`` float64, where ``scale >= max |x - mean|`` over the class's
      entries (at most three times it: the reference point and any other
      are within it of the mean; 1 for a class of equal points) and
      ``variance`` is the mean squared distance to the mean.
    """
    self._take()
    sizes = np.array([self.size[c] for c in classes], np.int64)
    offset = np.stack([self.sum[c] / self.size[c] for c in classes])
    mean = np.stack([self.ref[c] for c in classes]).astype(np.float64) + offset
    # |x - mean| <= |x - ref| + |ref - mean| entry by entry.
    scale = (np.array([self.deviation[c] for c in classes])
             + np.abs(offset).max(1))
    scale = np.where(scale == 0, 1.0, scale)
    variance = np.array([self.sum_sq[c] / self.size[c] for c in classes])
    variance = np.maximum(variance - (offset ** 2).sum(1), 0.0)
    return sizes, mean, scale, variance
