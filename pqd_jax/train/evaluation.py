"""Helpers of the evaluation protocol of the distilled sets.

The ``random`` baseline (``ipc`` random real images per class) and the
mean ± standard deviation of accuracies over seeds.
"""

import numpy as np

from pqd_jax import checks

__all__ = ["mean_std", "random_subset"]


def mean_std(values: list[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for a single value)."""
  arr = np.asarray(values, np.float64)
  return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def random_subset(labels: np.ndarray, ipc: int, seed: int) -> np.ndarray:
  """Indices of ``ipc`` random real images per class (the ``random`` set).

  Raises:
    ValueError: for an ipc < 1, a negative seed, or a class with fewer than
      ``ipc`` images.
  """
  ipc = checks.integer("ipc", ipc)
  seed = checks.integer("seed", seed, minimum=0)
  gen = np.random.default_rng(seed)
  picked = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    if len(idx) < ipc:
      raise ValueError(f"class {c} has {len(idx)} images, fewer than "
                       f"ipc={ipc}.")
    picked.append(gen.choice(idx, ipc, replace=False))
  return np.sort(np.concatenate(picked))
