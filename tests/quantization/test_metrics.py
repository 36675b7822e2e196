import jax
import numpy as np
import pytest

import pqd_jax
from pqd_jax.quantization import metrics
from tests.conftest import labelled_blobs


@pytest.fixture(scope="module")
def quantized():
  x, y = labelled_blobs((240,), dim=3, seed=2)
  out = pqd_jax.quantize(x, y, 6, n_init=3)
  return x, np.asarray(out.centroids[0]), np.asarray(out.counts[0]), out


def test_exact_w2_with_cell_masses_equals_distortion(quantized):
  x, c, counts, out = quantized
  w2_sq = metrics.w2(x, c, counts, method="exact") ** 2
  np.testing.assert_allclose(w2_sq, float(out.distortion[0]), rtol=1e-5)


def test_default_weights_are_the_cell_masses(quantized):
  x, c, counts, _ = quantized
  np.testing.assert_allclose(metrics.w2(x, c),
                             metrics.w2(x, c, counts, method="exact"),
                             rtol=1e-6)


@pytest.mark.parametrize("other", ["uniform", "sqrt"])
def test_mass_weights_beat_other_weights_on_the_same_support(quantized,
                                                             other):
  x, c, counts, _ = quantized
  w_other = pqd_jax.cell_weights(counts[None], other)[0]
  assert metrics.w2(x, c, counts) < metrics.w2(x, c, np.asarray(w_other))


@pytest.mark.parametrize("scheme", ["uniform", "mass"])
def test_sinkhorn_confirms_the_exact_value(quantized, scheme):
  x, c, counts, _ = quantized
  w = np.asarray(pqd_jax.cell_weights(counts[None], scheme)[0])
  exact = metrics.w2(x, c, w, method="exact")
  entropic = metrics.w2(x, c, w, method="sinkhorn", epsilon=1e-3)
  np.testing.assert_allclose(entropic, exact, rtol=0.01)


def test_weight_scale_does_not_matter(quantized):
  x, c, counts, _ = quantized
  np.testing.assert_allclose(metrics.w2(x, c, counts),
                             metrics.w2(x, c, 7.0 * counts), rtol=1e-9)


def test_barycenter_is_the_uniform_weight_case(quantized):
  x, c, counts, out = quantized
  bary = pqd_jax.barycenter(x, len(c), rng=jax.random.key(0))
  assert bool(bary.converged)
  np.testing.assert_allclose(np.asarray(bary.weights), 1 / len(c), rtol=1e-6)
  uniform = np.ones(len(c))
  w2_bary = metrics.w2(x, np.asarray(bary.support), uniform)
  w2_kmeans_uniform = metrics.w2(x, c, uniform)
  # Optimising the support for uniform weights does at least about as well
  # as k-means centroids with uniform weights ...
  assert w2_bary <= 1.02 * w2_kmeans_uniform
  # ... and freeing the weights (cell masses) does better than both.
  assert metrics.w2(x, c, counts) < w2_bary


@pytest.mark.parametrize("factor", [1e-20, 1e20])
def test_sinkhorn_w2_scales_with_the_data(quantized, factor):
  # 1e20: squared costs beyond float32; 1e-20: below its normal range.
  x, c, _, _ = quantized
  w = np.ones(len(c))
  ref = metrics.w2(x, c, w, method="sinkhorn")
  scaled = metrics.w2(factor * x, factor * c, w, method="sinkhorn")
  # Within the solve's marginal tolerance (1e-3).
  np.testing.assert_allclose(scaled, factor * ref, rtol=1e-3)


def test_sinkhorn_w2_ignores_an_offset(quantized):
  x, c, _, _ = quantized
  w = np.ones(len(c))
  ref = metrics.w2(x, c, w, method="sinkhorn")
  far = metrics.w2(x + 1e4, c + 1e4, w, method="sinkhorn")
  np.testing.assert_allclose(far, ref, rtol=1e-3)


def test_barycenter_of_one_point_is_the_point():
  point = np.array([[1.5, -2.0, 3.0]], np.float32)
  out = pqd_jax.barycenter(point, 1)
  np.testing.assert_array_equal(np.asarray(out.support), point)
  assert float(out.cost) == 0.0 and bool(out.converged)


def test_barycenter_of_equal_points_repeats_the_point():
  out = pqd_jax.barycenter(np.ones((6, 3), np.float32), 2)
  np.testing.assert_array_equal(np.asarray(out.support), np.ones((2, 3)))


def test_barycenter_ignores_an_offset(quantized):
  x, c, _, _ = quantized
  near = pqd_jax.barycenter(x, len(c), rng=jax.random.key(0))
  far = pqd_jax.barycenter(x + 1e4, len(c), rng=jax.random.key(0))
  np.testing.assert_allclose(np.asarray(far.support) - 1e4,
                             np.asarray(near.support), atol=5e-3)


class TestBadInput:

  def test_shape_mismatch(self):
    with pytest.raises(ValueError, match="3 features per row but centroids "
                       "have 2"):
      metrics.w2(np.zeros((5, 3)), np.zeros((2, 2)))

  def test_wrong_weight_length(self):
    with pytest.raises(ValueError, match=r"weights must have shape \[2\]"):
      metrics.w2(np.zeros((5, 3)), np.zeros((2, 3)), np.ones(3))

  def test_negative_weights(self):
    with pytest.raises(ValueError, match="non-negative"):
      metrics.w2(np.zeros((5, 3)), np.zeros((2, 3)), np.array([1.0, -1.0]))

  def test_unknown_method(self):
    with pytest.raises(ValueError, match="Unknown method 'lp'"):
      metrics.w2(np.zeros((5, 3)), np.zeros((2, 3)), np.ones(2), method="lp")

  def test_nan_points(self):
    x = np.zeros((5, 3))
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="points contains NaN"):
      metrics.w2(x, np.zeros((2, 3)))

  @pytest.mark.parametrize("epsilon", [-1.0, 0.0, float("nan")])
  def test_sinkhorn_w2_epsilon_not_positive(self, epsilon):
    with pytest.raises(ValueError, match="epsilon must be"):
      metrics.w2(np.zeros((5, 3)), np.zeros((2, 3)), np.ones(2),
                 method="sinkhorn", epsilon=epsilon)

  def test_sinkhorn_w2_zero_iterations(self):
    with pytest.raises(ValueError, match="max_iterations must be >= 1"):
      metrics.w2(np.zeros((5, 3)), np.zeros((2, 3)), np.ones(2),
                 method="sinkhorn", max_iterations=0)

  def test_sinkhorn_divergence_nan_epsilon(self):
    with pytest.raises(ValueError, match="epsilon must be finite"):
      metrics.sinkhorn_divergence(np.zeros((5, 3)), np.ones((5, 3)),
                                  epsilon=float("nan"))

  def test_barycenter_k_too_large(self):
    with pytest.raises(ValueError, match="k must be <= 5, got 6"):
      pqd_jax.barycenter(np.zeros((5, 3), np.float32), 6)

  @pytest.mark.parametrize("kwarg,value,message", [
      ("epsilon", -1.0, "epsilon must be > 0"),
      ("num_iters", 0, "num_iters must be >= 1"),
      ("sinkhorn_iters", 0, "sinkhorn_iters must be >= 1"),
      ("rng", 0, "rng must be a JAX PRNG key"),
  ])
  def test_barycenter_bad_argument(self, kwarg, value, message):
    x = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=message):
      pqd_jax.barycenter(x, 2, **{kwarg: value})


def test_sinkhorn_divergence_of_a_cloud_with_itself_is_zero():
  x = np.random.default_rng(0).standard_normal((60, 3))
  assert abs(metrics.sinkhorn_divergence(x, x)) < 1e-3


def test_sinkhorn_divergence_grows_with_the_shift():
  gen = np.random.default_rng(0)
  x = gen.standard_normal((80, 2))
  y = gen.standard_normal((80, 2))
  near = metrics.sinkhorn_divergence(x, y + 0.5)
  far = metrics.sinkhorn_divergence(x, y + 2.0)
  assert 0 < near < far


def test_sinkhorn_divergence_of_a_translation_is_its_squared_length():
  # For a pure translation by v, W2² = |v|² and S_ε → |v|² as ε → 0.
  x = np.random.default_rng(1).standard_normal((50, 2))
  value = metrics.sinkhorn_divergence(x, x + np.array([3.0, 0.0]),
                                      epsilon=0.01)
  np.testing.assert_allclose(value, 9.0, rtol=0.05)


def test_sinkhorn_divergence_refuses_mismatched_shapes():
  with pytest.raises(ValueError, match="x has 3 features.*y has 2"):
    metrics.sinkhorn_divergence(np.zeros((4, 3)), np.zeros((4, 2)))


def test_nearest_points_are_scikit_learns_neighbours_in_order():
  from sklearn.neighbors import NearestNeighbors

  x = np.random.default_rng(0).normal(size=(60, 4))
  c = np.random.default_rng(1).normal(size=(5, 4))
  expected = NearestNeighbors(n_neighbors=7).fit(x).kneighbors(
      c, return_distance=False)
  np.testing.assert_array_equal(metrics.nearest_points(x, c, 7), expected)


def test_nearest_points_refuse_more_than_there_are():
  with pytest.raises(ValueError, match="count=5 is more than the 4 points"):
    metrics.nearest_points(np.zeros((4, 2)), np.zeros((1, 2)), 5)


def test_nearest_members_are_the_points_closest_to_each_centroid():
  x = np.random.default_rng(0).normal(size=(50, 3))
  c = x[[7, 21, 40]] + 1e-3  # each centroid next to one point
  np.testing.assert_array_equal(metrics.nearest_members(x, c), [7, 21, 40])
