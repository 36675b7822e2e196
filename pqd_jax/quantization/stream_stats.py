"""What the first pass of :func:`pqd_jax.quantize_stream` learns per class.

A uniform sample of each class (for the seeds) and its moments: size, mean,
variance and largest deviation, which give the class's frame
(:mod:`pqd_jax.quantization.frame`). The moments are summed relative to the
class's first point (differences of nearby float32 numbers are exact), so a
class far from the origin keeps its variance (no ``E[x²] - E[x]²``
cancellation); each class run of a batch is reduced in one compiled pass
and the runs are accumulated in float64.
"""

import jax
import jax.numpy as jnp
import numpy as np

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
  keeps its ``size`` lowest. A point above the class's current highest kept
  priority cannot enter, so it is never copied. :attr:`points` lists each
  sample by priority, so it does not depend on how the stream is chunked.
  The sample keeps float16 points as float16 and casts others to float32.
  """

  def __init__(self, size: int, seed: int):
    self.size = size
    self.gen = np.random.default_rng(seed)
    self._points: dict[int, np.ndarray] = {}
    self._prios: dict[int, np.ndarray] = {}

  def add(self, flat: np.ndarray, labels: np.ndarray) -> None:
    """Offers the batch ``flat [b, d]`` with class ``labels [b]``."""
    prio = self.gen.random(labels.shape[0])
    for c, rows in class_runs(labels):
      rows = np.arange(len(labels))[rows] if isinstance(rows, slice) else rows
      pr = prio[rows]
      if c in self._prios and len(self._prios[c]) >= self.size:
        enters = pr < self._prios[c].max()
        rows, pr = rows[enters], pr[enters]
        if not len(rows):
          continue
      pts = flat[rows]
      if pts.dtype != np.float16:
        pts = pts.astype(np.float32)
      if c in self._points:
        pts = np.concatenate([self._points[c], pts])
        pr = np.concatenate([self._prios[c], pr])
      if pr.shape[0] > self.size:
        keep = np.argpartition(pr, self.size)[:self.size]
        pts, pr = pts[keep], pr[keep]
      self._points[c], self._prios[c] = pts, pr

  @property
  def points(self) -> dict[int, np.ndarray]:
    """Each class's sample ``[≤ size, d]``, by increasing priority."""
    return {c: pts[np.argsort(self._prios[c], kind="stable")]
            for c, pts in self._points.items()}


@jax.jit
def _run_moments(x: jnp.ndarray, ref: jnp.ndarray):
  """Sum, summed square and largest entry of ``x - ref`` (one fused pass)."""
  diff = x.astype(jnp.float32) - ref
  return (jnp.sum(diff, axis=0), jnp.sum(jnp.sum(diff * diff, axis=1)),
          jnp.max(jnp.abs(diff)))


class ClassMoments:
  """Per-class size, sums and largest deviation relative to a first point.

  Each run of a class in a batch is reduced in one compiled pass in
  float32 relative to the class's first point (which a run's points are
  close to, so the differences lose nothing to an offset); the runs are
  accumulated in float64.
  """

  def __init__(self):
    self.ref: dict[int, np.ndarray] = {}  # [d] float32, the first point
    self.size: dict[int, int] = {}
    self.sum: dict[int, np.ndarray] = {}  # [d] float64 sum of x - ref
    self.sum_sq: dict[int, float] = {}  # sum of |x - ref|^2
    self.deviation: dict[int, float] = {}  # max |x - ref| over entries

  def add(self, flat: np.ndarray, labels: np.ndarray) -> None:
    """Adds the batch ``flat [b, d]`` with class ``labels [b]``."""
    for c, rows in class_runs(labels):
      pts = flat[rows]
      if c not in self.ref:
        self.ref[c] = np.asarray(pts[0], np.float32)
        self.size[c], self.sum[c] = 0, np.zeros(pts.shape[1])
        self.sum_sq[c], self.deviation[c] = 0.0, 0.0
      total, sq, dev = _run_moments(pts, self.ref[c])
      self.size[c] += len(pts)
      self.sum[c] += np.asarray(total, np.float64)
      self.sum_sq[c] += float(sq)
      self.deviation[c] = max(self.deviation[c], float(dev))

  def classes(self) -> np.ndarray:
    """``[C]`` the sorted labels seen."""
    return np.array(sorted(self.ref))

  def summary(self, classes: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sizes, means, scales and variances of ``classes``.

    Returns:
      ``sizes [C]`` int64; ``mean [C, d]``, ``scale [C]`` and ``variance
      [C]`` float64, where ``scale >= max |x - mean|`` over the class's
      entries (at most twice it; 1 for a class of equal points) and
      ``variance`` is the mean squared distance to the mean.
    """
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
