import jax
import numpy as np
import pytest

from pqd_jax.quantization import stream_stats


def _classes(order: str, d: int = 6):
  """Points of 12 classes with offsets far from the origin, and a stream
  of them in batches of 32: class-major (one or two classes per batch, the
  one-hot path) or shuffled (up to 12 per batch, the segment-sum path)."""
  gen = np.random.default_rng(0)
  y = np.repeat(np.arange(12), gen.integers(20, 60, 12))
  x = (gen.normal(size=(len(y), d)) * (1 + y[:, None])
       + 1e4 * (y[:, None] - 5)).astype(np.float32)
  if order == "shuffled":
    perm = gen.permutation(len(y))
    x, y = x[perm], y[perm]
  return x, y


def _moments(x, y, batch=32):
  moments = stream_stats.ClassMoments()
  for s in range(0, len(y), batch):
    xb, yb = x[s:s + batch], y[s:s + batch]
    pad = batch - len(yb)  # padding rows past the labels are ignored
    flat = np.concatenate([xb, np.full((pad, x.shape[1]), 7e3, np.float32)])
    moments.add(jax.device_put(flat), flat, yb)
  return moments


@pytest.mark.parametrize("order,d", [
    ("class_major", 6), ("shuffled", 6),
    ("class_major", 1 << 17)])  # wide points: several blocks per batch
def test_moments_match_float64(order, d):
  x, y = _classes(order, d)
  moments = _moments(x, y)
  classes = moments.classes()
  sizes, mean, scale, variance = moments.summary(classes)
  x64 = x.astype(np.float64)
  for i, c in enumerate(classes):
    pts = x64[y == c]
    assert sizes[i] == len(pts)
    # float32 sums within a batch: 1e-5 of a spread of at least 1.
    np.testing.assert_allclose(mean[i], pts.mean(0), rtol=0, atol=1e-5)
    ref_var = np.mean(np.sum((pts - pts.mean(0)) ** 2, axis=1))
    np.testing.assert_allclose(variance[i], ref_var, rtol=1e-5)
    largest = np.abs(pts - pts.mean(0)).max()
    assert largest <= scale[i] <= 3 * largest


def test_a_non_finite_row_is_named():
  x, y = _classes("class_major")
  x[40, 2] = np.inf
  with pytest.raises(ValueError, match=r"in 1 rows .*first rows: \[40\]"):
    _moments(x, y).classes()


def test_a_nan_in_any_column_is_named():
  # Wide rows: a vectorised maximum may skip a NaN, depending on its lane.
  x, y = _classes("class_major", d=4096)
  for i, j in enumerate((0, 1, 7, 8, 2049, 4095)):
    x[40 + i, j] = np.nan
  with pytest.raises(ValueError,
                     match=r"in 6 rows .*first rows: \[40, 41, 42, 43, 44\]"):
    _moments(x, y).classes()


def test_large_finite_entries_are_not_called_non_finite():
  x, y = _classes("class_major")
  x[40] = 3e19  # finite, but its squared distance overflows float32
  _moments(x, y).classes()


def test_a_class_reference_is_not_a_view_of_its_batch():
  x, y = _classes("class_major")
  moments = _moments(x[:32], y[:32])
  batch = x[32:64].copy()
  moments.add(jax.device_put(batch), batch, y[32:64])
  new = set(y[32:64]) - set(y[:32])
  assert new and not any(np.shares_memory(moments.ref[c], batch)
                         for c in new)


def test_a_non_finite_first_point_is_the_only_row_named():
  x, y = _classes("shuffled")
  first = int(np.flatnonzero(y == y[5])[0])
  x[first, 0] = np.nan
  with pytest.raises(ValueError, match=rf"in 1 rows .*\[{first}\]"):
    _moments(x, y).classes()


def _sample(x, y, cuts, size=16, seed=3):
  reservoir = stream_stats.Reservoir(size, seed)
  for a, b in zip(cuts[:-1], cuts[1:], strict=True):
    reservoir.add(x[a:b], y[a:b])
  return reservoir.points


def _sampled_rows(y, c, size=16, seed=3):
  """Class ``c``'s rows of the ``size`` lowest priorities, in order: the
  priorities are one uniform draw per point, in stream order."""
  prio = np.random.default_rng(seed).random(len(y))
  rows = np.flatnonzero(y == c)
  return rows[np.argsort(prio[rows], kind="stable")[:size]]


@pytest.mark.parametrize("order", ["class_major", "shuffled"])
def test_reservoir_keeps_the_lowest_priorities_in_order(order):
  x, y = _classes(order)
  points = _sample(x, y, np.arange(0, len(y) + 32, 32).clip(max=len(y)))
  assert sorted(points) == sorted(np.unique(y).tolist())
  for c, got in points.items():
    np.testing.assert_array_equal(got, x[_sampled_rows(y, c)])


def test_reservoir_sample_does_not_depend_on_the_chunking():
  x, y = _classes("shuffled")
  one = _sample(x, y, [0, len(y)])
  cuts = np.unique(np.r_[0, np.random.default_rng(1).integers(
      1, len(y), 40), len(y)])
  for c, got in _sample(x, y, cuts).items():
    np.testing.assert_array_equal(got, one[c])


def test_reservoir_widens_a_float16_sample_for_float32_points():
  x, y = _classes("shuffled")
  reservoir = stream_stats.Reservoir(16, 3)
  half = len(y) // 2
  reservoir.add(x[:half].astype(np.float16), y[:half])
  reservoir.add(x[half:], y[half:])
  wide = np.concatenate([x[:half].astype(np.float16).astype(np.float32),
                         x[half:]])
  for c, got in reservoir.points.items():
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, wide[_sampled_rows(y, c)])
