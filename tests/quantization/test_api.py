import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ott.tools import k_means as ott_k_means
from sklearn.cluster import KMeans

import pqd_jax
from pqd_jax.quantization import metrics
from tests.conftest import labelled_blobs


def _class_points(x, y, label):
  return x[y == label]


@pytest.mark.parametrize("k", [3, 8])
def test_distortion_within_one_percent_of_sklearn(blobs, k):
  x, y = blobs
  out = pqd_jax.quantize(x, y, k, n_init=10, rng=jax.random.key(1))
  for i, label in enumerate(out.classes):
    xc = _class_points(x, y, label)
    sk = KMeans(k, n_init=10, random_state=0).fit(xc).inertia_ / len(xc)
    assert float(out.distortion[i]) <= 1.01 * sk


def test_agrees_with_ott_k_means(blobs):
  x, y = blobs
  k = 5
  out = pqd_jax.quantize(x, y, k, n_init=3)
  for i, label in enumerate(out.classes):
    xc = jnp.asarray(_class_points(x, y, label))
    ref = ott_k_means.k_means(xc, k=k, n_init=3, rng=jax.random.key(2))
    ref_dist = float(ref.error) / xc.shape[0]
    np.testing.assert_allclose(float(out.distortion[i]), ref_dist, rtol=0.02)


def test_distortion_is_the_float64_distortion_of_the_centroids(blobs):
  x, y = blobs
  out = pqd_jax.quantize(x, y, 6)
  for i, label in enumerate(out.classes):
    ref = metrics.distortion(_class_points(x, y, label), out.centroids[i])
    np.testing.assert_allclose(float(out.distortion[i]), ref, rtol=1e-5)


def test_counts_equal_recounted_cells(blobs):
  x, y = blobs
  out = pqd_jax.quantize(x, y, 7)
  for i, label in enumerate(out.classes):
    ref = metrics.cell_counts(_class_points(x, y, label), out.centroids[i])
    np.testing.assert_array_equal(np.asarray(out.counts[i]), ref)


def test_mass_weights_are_cell_masses_with_mean_one(blobs):
  x, y = blobs
  k = 7
  out = pqd_jax.quantize(x, y, k, weights="mass")
  counts = np.asarray(out.counts, np.float64)
  expected = k * counts / counts.sum(1, keepdims=True)
  np.testing.assert_allclose(np.asarray(out.weights), expected, rtol=1e-6)


def test_counts_sum_to_class_sizes(blobs):
  x, y = blobs
  out = pqd_jax.quantize(x, y, 4)
  sizes = [int(np.sum(y == label)) for label in out.classes]
  np.testing.assert_array_equal(np.asarray(out.counts).sum(1), sizes)


def test_classes_are_sorted_labels(blobs):
  x, y = blobs
  out = pqd_jax.quantize(x, y, 4)
  np.testing.assert_array_equal(out.classes, [0, 10, 20])


def test_latent_shape_is_restored(rng):
  x = np.asarray(jax.random.normal(rng, (60, 2, 3, 4)), np.float32)
  y = np.repeat([0, 1], 30)
  out = pqd_jax.quantize(x, y, 3)
  assert out.centroids.shape == (2, 3, 2, 3, 4)
  assert out.weights.shape == out.counts.shape == (2, 3)
  assert out.distortion.shape == out.iterations.shape == (2,)


def test_same_seed_is_bitwise_deterministic(blobs):
  x, y = blobs
  a = pqd_jax.quantize(x, y, 5, rng=jax.random.key(3))
  b = pqd_jax.quantize(x, y, 5, rng=jax.random.key(3))
  np.testing.assert_array_equal(np.asarray(a.centroids),
                                np.asarray(b.centroids))
  np.testing.assert_array_equal(np.asarray(a.counts), np.asarray(b.counts))


def test_seed_changes_the_seeding(blobs):
  x, y = blobs
  a = pqd_jax.quantize(x, y, 5, rng=jax.random.key(3), num_iters=1)
  b = pqd_jax.quantize(x, y, 5, rng=jax.random.key(4), num_iters=1)
  assert not np.array_equal(np.asarray(a.centroids), np.asarray(b.centroids))


def test_class_result_does_not_depend_on_other_classes(blobs):
  x, y = blobs
  full = pqd_jax.quantize(x, y, 5)
  keep = y != 0
  part = pqd_jax.quantize(x[keep], y[keep], 5)
  np.testing.assert_allclose(np.asarray(full.centroids[1:]),
                             np.asarray(part.centroids), rtol=1e-4, atol=1e-4)


def test_chunked_assignment_equals_one_chunk(blobs):
  x, y = blobs
  one = pqd_jax.quantize(x, y, 5)
  many = pqd_jax.quantize(x, y, 5, chunk_size=16)
  np.testing.assert_array_equal(np.asarray(one.counts),
                                np.asarray(many.counts))
  np.testing.assert_allclose(np.asarray(one.centroids),
                             np.asarray(many.centroids), rtol=1e-5, atol=1e-5)


def test_class_batching_equals_one_class_at_a_time(blobs):
  x, y = blobs
  one = pqd_jax.quantize(x, y, 5)
  batched = pqd_jax.quantize(x, y, 5, class_batch_size=3)
  np.testing.assert_array_equal(np.asarray(one.counts),
                                np.asarray(batched.counts))


def test_jit_equals_eager():
  x, y = labelled_blobs((8,), dim=2)
  jitted = pqd_jax.quantize(x, y, 2, num_iters=2)
  with jax.disable_jit():
    eager = pqd_jax.quantize(x, y, 2, num_iters=2)
  np.testing.assert_array_equal(np.asarray(jitted.counts),
                                np.asarray(eager.counts))
  np.testing.assert_allclose(np.asarray(jitted.centroids),
                             np.asarray(eager.centroids), rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_input_matches_float32(blobs, dtype):
  x, y = blobs
  low = np.asarray(jnp.asarray(x, dtype))
  ref = pqd_jax.quantize(low.astype(np.float32), y, 5)
  out = pqd_jax.quantize(low, y, 5)
  assert out.centroids.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out.distortion),
                             np.asarray(ref.distortion), rtol=1e-5)


def test_more_inits_never_increase_distortion(blobs):
  x, y = blobs
  one = pqd_jax.quantize(x, y, 6, rng=jax.random.key(7))
  many = pqd_jax.quantize(x, y, 6, n_init=4, rng=jax.random.key(7))
  assert np.all(np.asarray(many.distortion)
                <= np.asarray(one.distortion) * (1 + 1e-6))


def test_random_init_converges_too(blobs):
  x, y = blobs
  pp = pqd_jax.quantize(x, y, 5, n_init=4)
  rnd = pqd_jax.quantize(x, y, 5, init="random", n_init=4)
  assert bool(jnp.all(rnd.converged))
  np.testing.assert_allclose(np.asarray(rnd.distortion),
                             np.asarray(pp.distortion), rtol=0.02)


def test_converges_and_stops_before_max_iterations(blobs):
  x, y = blobs
  out = pqd_jax.quantize(x, y, 5, num_iters=300)
  assert bool(jnp.all(out.converged))
  assert int(jnp.max(out.iterations)) < 300


def test_num_iters_caps_the_passes(blobs):
  x, y = blobs
  out = pqd_jax.quantize(x, y, 8, num_iters=2, tol=0.0)
  np.testing.assert_array_equal(np.asarray(out.iterations), [2, 2, 2])
  assert not bool(jnp.any(out.converged))


def test_k_equal_to_class_size_puts_one_point_per_cell():
  x, y = labelled_blobs((12, 9), dim=2)
  out = pqd_jax.quantize(x, y, 9)
  assert np.asarray(out.counts)[1].tolist() == [1] * 9
  assert float(out.distortion[1]) == pytest.approx(0.0, abs=1e-5)


def test_duplicate_points_leave_no_cell_empty():
  # 6 distinct points, each repeated: any k <= 6 must keep every cell filled.
  gen = np.random.default_rng(0)
  base = gen.normal(size=(6, 3)).astype(np.float32)
  x = np.repeat(base, [40, 1, 1, 1, 1, 1], axis=0)
  y = np.zeros(len(x), int)
  out = pqd_jax.quantize(x, y, 6, init="random", rng=jax.random.key(5))
  assert np.all(np.asarray(out.counts) > 0)
  assert float(out.distortion[0]) == pytest.approx(0.0, abs=1e-5)


def test_clvq_is_close_to_lloyd(blobs):
  x, y = blobs
  lloyd = pqd_jax.quantize(x, y, 5)
  clvq = pqd_jax.quantize(x, y, 5, method="clvq", batch_size=64, num_iters=20)
  assert np.all(np.asarray(clvq.distortion)
                <= 1.05 * np.asarray(lloyd.distortion))


def test_clvq_counts_are_exact_recounts(blobs):
  x, y = blobs
  out = pqd_jax.quantize(x, y, 5, method="clvq", batch_size=50)
  for i, label in enumerate(out.classes):
    ref = metrics.cell_counts(_class_points(x, y, label), out.centroids[i])
    np.testing.assert_array_equal(np.asarray(out.counts[i]), ref)


class TestBadInput:

  def test_k_below_one(self, blobs):
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
      pqd_jax.quantize(*blobs, 0)

  def test_k_not_an_integer(self, blobs):
    with pytest.raises(ValueError, match="k must be an integer, got 2.5"):
      pqd_jax.quantize(*blobs, 2.5)

  def test_k_larger_than_a_class(self, blobs):
    with pytest.raises(ValueError, match=r"k=201 .*class\(es\) \[10\]"):
      pqd_jax.quantize(*blobs, 201)

  def test_float_labels(self, blobs):
    x, y = blobs
    with pytest.raises(ValueError, match="labels must be integers"):
      pqd_jax.quantize(x, y.astype(np.float32), 3)

  def test_label_length_mismatch(self, blobs):
    x, y = blobs
    with pytest.raises(ValueError, match="labels has length 749 but latents "
                       "has 750"):
      pqd_jax.quantize(x, y[:-1], 3)

  def test_two_dimensional_labels(self, blobs):
    x, y = blobs
    with pytest.raises(ValueError, match="labels must be 1-D"):
      pqd_jax.quantize(x, y[:, None], 3)

  @pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
  def test_non_finite_latents(self, blobs, bad):
    x, y = blobs
    x = x.copy()
    x[7, 1] = bad
    with pytest.raises(ValueError, match=r"NaN or Inf in 1 rows .*\[7\]"):
      pqd_jax.quantize(x, y, 3)

  def test_empty_input(self):
    with pytest.raises(ValueError, match="latents is empty"):
      pqd_jax.quantize(np.zeros((0, 4), np.float32), np.zeros(0, int), 1)

  def test_rank_one_latents(self):
    with pytest.raises(ValueError, match="rank >= 2"):
      pqd_jax.quantize(np.zeros(5, np.float32), np.zeros(5, int), 1)

  def test_integer_latents(self, blobs):
    x, y = blobs
    with pytest.raises(ValueError, match="floating point.*uint8"):
      pqd_jax.quantize(x.astype(np.uint8), y, 3)

  @pytest.mark.parametrize("kwarg,value,name", [
      ("method", "kmeans", "method"),
      ("weights", "density", "weights"),
      ("init", "k-means++", "init"),
  ])
  def test_unknown_choice(self, blobs, kwarg, value, name):
    message = re.escape(f"Unknown {name} '{value}'")
    with pytest.raises(ValueError, match=message):
      pqd_jax.quantize(*blobs, 3, **{kwarg: value})

  def test_negative_tol(self, blobs):
    with pytest.raises(ValueError, match="tol must be >= 0, got -1.0"):
      pqd_jax.quantize(*blobs, 3, tol=-1.0)

  def test_numpy_scalar_tol_is_accepted(self, blobs):
    out = pqd_jax.quantize(*blobs, 3, tol=np.float32(1e-4))
    assert out.centroids.shape[:2] == (3, 3)

  @pytest.mark.parametrize("rng", [0, "seed", np.arange(2.0)])
  def test_rng_that_is_not_a_key(self, blobs, rng):
    with pytest.raises(ValueError, match="rng must be a JAX PRNG key"):
      pqd_jax.quantize(*blobs, 3, rng=rng)

  def test_a_batch_of_keys(self, blobs):
    keys = jax.random.split(jax.random.key(0), 2)
    with pytest.raises(ValueError, match="single PRNG key"):
      pqd_jax.quantize(*blobs, 3, rng=keys)

  def test_raw_uint32_key_is_accepted(self, blobs):
    out = pqd_jax.quantize(*blobs, 3, rng=jax.random.PRNGKey(1))
    assert out.centroids.shape[:2] == (3, 3)

  def test_mesh_that_is_not_a_mesh(self, blobs):
    with pytest.raises(ValueError, match="mesh must be a jax.sharding.Mesh"):
      pqd_jax.quantize(*blobs, 3, mesh="data")

  def test_float64_latents_beyond_float32(self, blobs):
    x, y = blobs
    with pytest.raises(ValueError, match="beyond float32's range"):
      pqd_jax.quantize(x.astype(np.float64) * 1e300, y, 3)

  def test_latents_whose_squared_distances_overflow(self, blobs):
    x, y = blobs
    with pytest.raises(ValueError, match="overflows float32"):
      pqd_jax.quantize((x * 1e20).astype(np.float32), y, 3)

  def test_ragged_latents(self):
    with pytest.raises(ValueError, match="latents must be an array"):
      pqd_jax.quantize([[1.0, 2.0], [1.0]] * 6, np.zeros(12, int), 1)

  def test_labels_beyond_int32(self, blobs):
    x, y = blobs
    with pytest.raises(ValueError, match="int32 range"):
      pqd_jax.quantize(x, y.astype(np.int64) * 2**33, 3)

  def test_zero_iterations(self, blobs):
    with pytest.raises(ValueError, match="num_iters must be >= 1, got 0"):
      pqd_jax.quantize(*blobs, 3, num_iters=0)
