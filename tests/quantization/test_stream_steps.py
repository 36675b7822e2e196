import jax.numpy as jnp
import numpy as np
import pytest

from pqd_jax.quantization import frame as frame_lib
from pqd_jax.quantization import stream_steps


def _reference(cents, shift, scale, x, cls):
  """Nearest own-class centroid of each point in float64, and cell sums."""
  num_classes, k, d = cents.shape
  sums = np.zeros((num_classes * k, d))
  counts = np.zeros(num_classes * k, np.int64)
  sse = np.zeros(num_classes)
  for xi, c in zip(x.astype(np.float64), cls, strict=True):
    if c == num_classes:  # padding
      continue
    xi = (xi - shift[c]) / scale[c]
    dist = np.sum((cents[c].astype(np.float64) - xi) ** 2, axis=1)
    j = int(np.argmin(dist))
    sums[c * k + j] += xi
    counts[c * k + j] += 1
    sse[c] += dist[j]
  return sums, counts, sse


@pytest.mark.parametrize("num_classes,d", [
    (2, 6), (stream_steps.DENSE_CLASSES, 6),
    (stream_steps.DENSE_CLASSES + 4, 6),
    (2, 1 << 17)])  # a batch of wide points is read in several blocks
def test_cell_stats_are_the_float64_reference(num_classes, d):
  gen = np.random.default_rng(num_classes)
  k, b = 3, 40
  cents = gen.normal(size=(num_classes, k, d)).astype(np.float32)
  shift = gen.normal(size=(num_classes, d)).astype(np.float32)
  scale = gen.uniform(1, 3, num_classes).astype(np.float32)
  cls = np.sort(gen.integers(0, num_classes + 1, b)).astype(np.int32)
  x = (shift[np.minimum(cls, num_classes - 1)]
       + gen.normal(size=(b, d)) * 2).astype(np.float32)
  out = stream_steps.cell_stats(
      jnp.asarray(cents), frame_lib.ClassFrame(jnp.asarray(shift),
                                               jnp.asarray(scale)),
      jnp.asarray(x), jnp.asarray(cls), sub=8)
  sums, counts, sse = _reference(cents, shift, scale, x, cls)
  np.testing.assert_array_equal(np.asarray(out.counts), counts)
  np.testing.assert_allclose(np.asarray(out.sums), sums, atol=1e-5)
  np.testing.assert_allclose(np.asarray(out.sse), sse, rtol=1e-5)


def test_rows_of_a_one_hot_are_the_table_rows_exactly():
  gen = np.random.default_rng(0)
  table = gen.normal(0, 1e4, (3, 5)).astype(np.float32)
  which = np.array([2, 0, 3, 1, 1])  # 3: a padding row, no class
  hot = (which[:, None] == np.arange(3)[None]).astype(np.float32)
  expected = np.concatenate([table, np.zeros((1, 5), np.float32)])[which]
  np.testing.assert_array_equal(
      np.asarray(stream_steps.rows_of(jnp.asarray(hot), jnp.asarray(table))),
      expected)
