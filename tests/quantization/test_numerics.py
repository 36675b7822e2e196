"""quantize and quantize_stream are exact at any offset and scale of the data.

The oracle is a float64 recount: each point's nearest returned centroid, the
cell counts and the mean squared distance, computed from the same float32
data; exact up to nearly tied points at an offset of 1e6 spreads, where the
returned float32 centroids are rounded to 2^-5 of the spread (the
quantizer's own recount, in the class's frame, is exact). Offsets are
relative to the spread (the data are ``scale · (z +
offset)``, z standard normal), so every case keeps its spread in float32.
"""

import jax
import numpy as np
import pytest

import pqd_jax


def _data(offset, scale, classes=3, per_class=20, d=8, seed=0):
  z = np.random.default_rng(seed).standard_normal((classes * per_class, d))
  x = (scale * (z + offset)).astype(np.float32)
  return x, np.repeat(np.arange(classes), per_class)


def _recount(x, labels, out):
  """Counts and distortion, the points nearly tied, and the rounding slack.

  A point is nearly tied when the float32 rounding of the returned centroids
  could swap its two nearest: a centroid ``c`` is off by at most ``δ = ‖one
  float32 spacing of c‖``, which moves ``‖x - c‖²`` by at most ``2 ‖x - c‖
  δ + δ²``, and the two nearest distances differ by less than the sum of
  their bounds. Over a cell of ``n_j`` points with mean ``m_j``, the rounding
  moves the summed squared distance by at most ``n_j (2 ‖m_j - c_j‖ δ_j +
  δ_j²)``: the slack of the distortion, per class.
  """
  x64 = x.astype(np.float64)
  counts, distortion, ties, slack = [], [], [], []
  for i, c in enumerate(np.asarray(out.classes)):
    pts = x64[labels == c]
    cents32 = np.asarray(out.centroids[i], np.float32)
    cents = cents32.astype(np.float64)
    d2 = ((pts[:, None, :] - cents[None]) ** 2).sum(-1)
    nearest = d2.argmin(1)
    counts.append(np.bincount(nearest, minlength=len(cents)))
    distortion.append(d2.min(1).mean())
    delta = np.linalg.norm(np.spacing(np.abs(cents32)).astype(np.float64),
                           axis=1)  # [k]
    moved = 2 * np.sqrt(d2) * delta[None] + delta[None] ** 2  # [n, k]
    first, second = np.argsort(d2, axis=1)[:, :2].T
    rows = np.arange(len(pts))
    gap = d2[rows, second] - d2[rows, first]
    ties.append(int(np.sum(gap <= moved[rows, first] + moved[rows, second])))
    cell = [(nearest == j).sum() * (
        2 * np.linalg.norm(pts[nearest == j].mean(0) - cents[j]) * delta[j]
        + delta[j] ** 2) for j in range(len(cents)) if (nearest == j).any()]
    slack.append(sum(cell) / len(pts))
  return (np.array(counts), np.array(distortion), np.array(ties),
          np.array(slack))


CASES = [(offset, scale) for offset in (0.0, 1e4, 1e6)
         for scale in (1e-20, 1e-5, 1.0, 1e15)]


def _quantize(method, x, labels):
  if method == "stream":
    batches = lambda: ((x[s:s + 7], labels[s:s + 7])
                       for s in range(0, len(labels), 7))
    return pqd_jax.quantize_stream(batches, 3, batch_size=16, num_passes=2,
                                   rng=jax.random.key(0))
  return pqd_jax.quantize(x, labels, 3, method=method, batch_size=8,
                          rng=jax.random.key(0))


@pytest.mark.parametrize("method", ["lloyd", "clvq", "d4m", "stream"])
@pytest.mark.parametrize("offset, scale", CASES)
def test_counts_and_distortion_are_a_float64_recount(method, offset, scale):
  x, labels = _data(offset, scale)
  out = _quantize(method, x, labels)
  counts, distortion, ties, slack = _recount(x, labels, out)
  if offset < 1e5:
    np.testing.assert_array_equal(np.asarray(out.counts), counts)
  else:  # only nearly tied points may fall in the other cell
    moved = np.abs(np.asarray(out.counts) - counts).sum(1)
    assert (moved <= 2 * ties).all(), (moved, ties)
  returned = np.asarray(out.distortion, np.float64)
  if offset > 1e5:
    # The returned centroids are rounded to float32 at the offset, to a
    # few percent of the spread: the recount may move by the slack of that
    # rounding (D4M's and CLVQ's centroids are not their cells' means, so
    # at first order), and no further.
    assert (np.abs(returned - distortion) <= slack + 1e-5 * distortion).all(
        ), (returned, distortion, slack)
  else:
    # D4M's and the stream's (CLVQ) centroids are not their cells' means,
    # so the rounding at 1e4 (2^-10 of the spread) moves the recount at
    # first order, by up to ~1e-4.
    exact_means = method not in ("d4m", "stream")
    rtol = 1e-5 if offset == 0 or exact_means else 1e-3
    np.testing.assert_allclose(returned, distortion, rtol=rtol)
  assert (distortion > 0).all()


def test_a_stream_whose_distortion_overflows_float32_is_refused():
  x, labels = _data(0.0, 1e19)  # deviations ~1e19: d * 1e38 > float32 max
  with pytest.raises(ValueError, match=r"class\(es\) \[0, 1, 2\] spread"):
    _quantize("stream", x, labels)


@pytest.mark.parametrize("offset", [1e3, 1e4])
def test_an_offset_does_not_change_the_quantizer(offset):
  x, labels = _data(0.0, 1.0)
  far, _ = _data(offset, 1.0)
  near = pqd_jax.quantize(x, labels, 3, rng=jax.random.key(0))
  moved = pqd_jax.quantize(far, labels, 3, rng=jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(moved.counts),
                                np.asarray(near.counts))
  np.testing.assert_allclose(np.asarray(moved.distortion),
                             np.asarray(near.distortion), rtol=1e-2)
