"""Helpers of the evaluation protocol of the distilled sets.

The ``random`` baseline (``ipc`` random real images per class), the mean ±
standard deviation of accuracies over seeds, and the classifiers'
predictions on a real split read once, ahead of the device, by grain
workers (:func:`predict_source`).
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from pqd_jax import checks, sharding
from pqd_jax.train import steps

__all__ = ["mean_std", "predict_source", "random_subset"]


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


def predict_source(classifiers: Sequence[tuple[Any, Any]], source: Any, *,
                   batch_size: int = 1000, num_workers: int = 0,
                   prefetch: int = 2) -> list[np.ndarray]:
  """Each classifier's predicted classes on every image of ``source``.

  The split is read once for all the classifiers, a batch at a time, by
  :func:`pqd_jax.data.pipeline.prefetch_batches`: grain workers decode the
  next batches (a device's rows of a batch per read) while the devices
  predict. Each prediction is
  :func:`pqd_jax.train.steps.predict` of the images in ``[-1, 1]``, on the
  same fixed-size batches (the last one padded with zeros), so the result
  is the same as ``steps.predict`` on the whole split, whatever the worker
  count. In a multi-process run each process decodes only its devices'
  rows.

  Args:
    classifiers: ``(model, variables)`` pairs (eval mode).
    source: an :class:`~pqd_jax.data.sources.ImageSource`.
    batch_size: images per compiled call (rounded up to the devices).
    num_workers: decoding processes (0: a thread of this process).
    prefetch: batches read ahead per worker.

  Returns:
    ``[n]`` int predictions per classifier, in source order.

  Raises:
    ValueError: for a batch_size < 1, an empty source, or bad num_workers
      or prefetch.
  """
  from pqd_jax.data import pipeline  # data deps only on this path

  batch_size = checks.integer("batch_size", batch_size)
  n = len(source)
  if n == 0:
    raise ValueError("the source is empty.")
  mesh = sharding.data_mesh()
  shards = sharding.num_data_shards(mesh)
  size = -(-min(batch_size, n) // shards) * shards  # as map_batches
  # Read a device's rows of a batch at a time (host memory: a device's share
  # per read; another process's rows are not decoded here).
  pieces = pipeline.device_pieces(n, size, mesh)
  local = [rows for _, _, rows in pieces]
  image_shape = source[0][0].shape
  # Replicated once: steps.predict then places nothing per batch.
  classifiers = [(model, sharding.replicate(variables, mesh))
                 for model, variables in classifiers]
  preds = [[] for _ in classifiers]
  ahead = pipeline.prefetch_batches(
      source, [np.arange(a, b) for a, b, _ in pieces],
      num_workers=num_workers, prefetch=prefetch,
      rows=None if all(r is None for r in local) else local.__getitem__)
  try:
    for start in range(0, n, size):
      m = min(size, n - start)
      got = [next(ahead) for a, _, _ in pieces if start <= a < start + m]
      x = pipeline.unit_rows(got, source, image_shape, size)  # zero-padded
      for out, (model, variables) in zip(preds, classifiers, strict=True):
        out.append(steps.predict(model, variables, x, size)[:m])
  finally:
    ahead.close()
  return [np.concatenate(p) for p in preds]
