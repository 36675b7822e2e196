import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pqd_jax.quantization import weights

COUNTS = np.array([[1, 4, 9, 0], [5, 5, 5, 5]])


@pytest.mark.parametrize("scheme", weights.WEIGHT_SCHEMES)
def test_mean_one_per_class(scheme):
  w = np.asarray(weights.cell_weights(COUNTS, scheme))
  np.testing.assert_allclose(w.mean(axis=1), 1.0, rtol=1e-6)


def test_mass_is_proportional_to_counts():
  w = np.asarray(weights.cell_weights(COUNTS, "mass"))
  np.testing.assert_allclose(w[0], 4 * np.array([1, 4, 9, 0]) / 14, rtol=1e-6)


def test_sqrt_is_proportional_to_root_counts():
  w = np.asarray(weights.cell_weights(COUNTS, "sqrt"))
  np.testing.assert_allclose(w[0], 4 * np.array([1, 2, 3, 0]) / 6, rtol=1e-6)


def test_uniform_is_all_ones():
  np.testing.assert_array_equal(weights.cell_weights(COUNTS, "uniform"), 1.0)


def test_equal_counts_give_uniform_weights_in_every_scheme():
  for scheme in weights.WEIGHT_SCHEMES:
    np.testing.assert_allclose(weights.cell_weights(COUNTS, scheme)[1], 1.0)


def test_unknown_scheme():
  with pytest.raises(ValueError, match="Unknown weights scheme 'density'"):
    weights.cell_weights(COUNTS, "density")


def test_scalar_counts():
  with pytest.raises(ValueError, match="got a scalar 5"):
    weights.cell_weights(5)


@pytest.mark.parametrize("counts", [[3, -1, 1], [np.nan, 1, 1]])
def test_negative_or_nan_counts(counts):
  with pytest.raises(ValueError, match="counts must be finite and >= 0"):
    weights.cell_weights(counts)


def test_counts_inside_jit():
  out = jax.jit(weights.cell_weights)(jnp.array([1.0, 3.0]))
  np.testing.assert_allclose(np.asarray(out), [0.5, 1.5])
