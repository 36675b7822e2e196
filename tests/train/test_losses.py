import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pqd_jax.train import losses


def _logits(seed, b=6, c=5):
  return np.asarray(jax.random.normal(jax.random.key(seed), (b, c)) * 2)


def _kd_reference(s, t, w, temp):
  """float64 numpy T² · KL(p_t ‖ p_s), weighted mean."""
  s = np.asarray(s, np.float64) / temp
  t = np.asarray(t, np.float64) / temp
  log_ps = s - np.log(np.exp(s).sum(1, keepdims=True))
  log_pt = t - np.log(np.exp(t).sum(1, keepdims=True))
  per = temp ** 2 * (np.exp(log_pt) * (log_pt - log_ps)).sum(1)
  return (w * per).sum() / w.sum()


@pytest.mark.parametrize("temp", [1.0, 4.0])
def test_weighted_kd_matches_float64_reference(temp):
  s, t = _logits(0), _logits(1)
  w = np.array([0.2, 1.0, 3.0, 0.5, 1.3, 0.0])
  got = losses.weighted_kd_loss(s, t, w, temperature=temp)
  np.testing.assert_allclose(float(got), _kd_reference(s, t, w, temp),
                             rtol=1e-5)


def test_uniform_weights_equal_the_unweighted_loss():
  s, t = _logits(0), _logits(1)
  np.testing.assert_allclose(
      float(losses.weighted_kd_loss(s, t, np.ones(6), 2.0)),
      float(losses.weighted_kd_loss(s, t, None, 2.0)), rtol=1e-6)


def test_weights_are_scale_free():
  s, t = _logits(0), _logits(1)
  w = np.array([0.2, 1.0, 3.0, 0.5, 1.3, 0.7])
  np.testing.assert_allclose(
      float(losses.weighted_kd_loss(s, t, w)),
      float(losses.weighted_kd_loss(s, t, 10 * w)), rtol=1e-6)


def test_a_batch_of_zero_weights_has_a_zero_gradient():
  logits = jnp.array([[1.0, -1.0], [0.5, 0.2]])
  grad = jax.grad(losses.weighted_ce_loss)(logits, jnp.array([0, 1]),
                                           jnp.zeros(2))
  np.testing.assert_array_equal(np.asarray(grad), 0.0)


def test_temperature_scaling():
  s, t = _logits(0), _logits(1)
  np.testing.assert_allclose(
      np.asarray(losses.kd_per_sample(s, t, 3.0)),
      9.0 * np.asarray(losses.kd_per_sample(s / 3.0, t / 3.0, 1.0)),
      rtol=1e-5)


def test_kd_is_zero_when_student_equals_teacher():
  s = _logits(0)
  np.testing.assert_allclose(np.asarray(losses.kd_per_sample(s, s, 2.0)), 0.0,
                             atol=1e-6)


def test_weighted_ce_matches_reference():
  logits = _logits(2)
  labels = np.array([0, 1, 2, 3, 4, 0])
  w = np.array([1.0, 2.0, 0.5, 1.0, 1.0, 3.0])
  x = logits.astype(np.float64)
  logp = x - np.log(np.exp(x).sum(1, keepdims=True))
  ref = (w * -logp[np.arange(6), labels]).sum() / w.sum()
  np.testing.assert_allclose(float(losses.weighted_ce_loss(logits, labels, w)),
                             ref, rtol=1e-5)


class TestCheckDistilledSet:

  def _ok(self):
    return np.zeros((3, 4, 4, 1), np.float32), np.array([0, 1, 2]), np.ones(3)

  def test_valid_set_passes(self):
    losses.check_distilled_set(*self._ok(), num_classes=3)

  def test_negative_weight(self):
    x, y, w = self._ok()
    w[1] = -0.5
    with pytest.raises(ValueError, match=r"rows \[1\] hold \[-0.5\]"):
      losses.check_distilled_set(x, y, w, 3)

  def test_nan_weight(self):
    x, y, w = self._ok()
    w[2] = np.nan
    with pytest.raises(ValueError, match="finite"):
      losses.check_distilled_set(x, y, w, 3)

  def test_all_zero_weights(self):
    x, y, _ = self._ok()
    with pytest.raises(ValueError, match="all zero"):
      losses.check_distilled_set(x, y, np.zeros(3), 3)

  def test_label_out_of_range(self):
    x, _, w = self._ok()
    with pytest.raises(ValueError, match=r"\[0, 3\); got \[5\]"):
      losses.check_distilled_set(x, np.array([0, 5, 1]), w, 3)

  def test_nan_image(self):
    x, y, w = self._ok()
    x[2, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"images must be finite; rows \[2\]"):
      losses.check_distilled_set(x, y, w, 3)

  def test_empty_set(self):
    with pytest.raises(ValueError, match="n >= 1"):
      losses.check_distilled_set(np.zeros((0, 4, 4, 1)), np.zeros(0, int),
                                 np.zeros(0), 3)
