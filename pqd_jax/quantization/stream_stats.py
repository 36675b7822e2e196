"""What the first pass of :func:`pqd_jax.quantize_stream` learns per class.

A uniform sample of each class (for the seeds) and its moments: size, mean,
variance and largest deviation, which give the class's frame
(:mod:`pqd_jax.quantization.frame`). The moments are summed relative to the
class's first point in float64, so a class far from the origin keeps its
variance (no ``E[x²] - E[x]²`` cancellation), and they do not depend on how
the stream is chunked.
"""

import numpy as np

__all__ = ["ClassMoments", "Reservoir"]


class Reservoir:
  """Per-class uniform sample of fixed size by random priorities.

  The sample keeps float16 points as float16 and casts others to float32.
  """

  def __init__(self, size: int, seed: int):
    self.size = size
    self.gen = np.random.default_rng(seed)
    self.points: dict[int, np.ndarray] = {}
    self.prios: dict[int, np.ndarray] = {}

  def add(self, flat: np.ndarray, labels: np.ndarray) -> None:
    """Offers the batch ``flat [b, d]`` with class ``labels [b]``."""
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


class ClassMoments:
  """Per-class size, sums and largest deviation relative to a first point."""

  def __init__(self):
    self.ref: dict[int, np.ndarray] = {}  # [d] float64, the first point
    self.size: dict[int, int] = {}
    self.sum: dict[int, np.ndarray] = {}  # [d] sum of x - ref
    self.sum_sq: dict[int, float] = {}  # sum of |x - ref|^2
    self.deviation: dict[int, float] = {}  # max |x - ref| over entries

  def add(self, flat: np.ndarray, labels: np.ndarray) -> None:
    """Adds the batch ``flat [b, d]`` with class ``labels [b]``."""
    for c in np.unique(labels).tolist():
      pts = flat[labels == c].astype(np.float64)
      if c not in self.ref:
        self.ref[c] = pts[0].copy()
        self.size[c], self.sum[c] = 0, np.zeros(pts.shape[1])
        self.sum_sq[c], self.deviation[c] = 0.0, 0.0
      diff = pts - self.ref[c]
      self.size[c] += len(pts)
      self.sum[c] += diff.sum(0)
      self.sum_sq[c] += float(np.einsum("nd,nd->", diff, diff))
      self.deviation[c] = max(self.deviation[c], float(np.abs(diff).max()))

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
    mean = np.stack([self.ref[c] for c in classes]) + offset
    # |x - mean| <= |x - ref| + |ref - mean| entry by entry.
    scale = (np.array([self.deviation[c] for c in classes])
             + np.abs(offset).max(1))
    scale = np.where(scale == 0, 1.0, scale)
    variance = np.array([self.sum_sq[c] / self.size[c] for c in classes])
    variance = np.maximum(variance - (offset ** 2).sum(1), 0.0)
    return sizes, mean, scale, variance
