"""The shared argument checks: what they accept and what they name."""

import jax
import numpy as np
import pytest

from pqd_jax import checks


def test_integer_accepts_numpy_integers():
  assert checks.integer("k", np.int64(3)) == 3


@pytest.mark.parametrize("value", [True, 2.0, "2", None])
def test_integer_refuses_other_types(value):
  with pytest.raises(ValueError, match="k must be an integer"):
    checks.integer("k", value)


def test_integer_names_the_bound_it_breaks():
  with pytest.raises(ValueError, match="k must be <= 4, got 5"):
    checks.integer("k", 5, maximum=4)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_number_refuses_non_finite_values(value):
  with pytest.raises(ValueError, match="tol must be finite"):
    checks.number("tol", value)


def test_number_positive_refuses_zero():
  with pytest.raises(ValueError, match="epsilon must be > 0, got 0.0"):
    checks.number("epsilon", 0.0, positive=True)


def test_prng_key_accepts_a_typed_key():
  key = jax.random.key(0)
  assert checks.prng_key("rng", key) is key


def test_choice_lists_the_choices():
  with pytest.raises(ValueError, match=r"expected one of \('a', 'b'\)"):
    checks.choice("mode", "c", ("a", "b"))


def test_from_pt_without_torch_says_what_to_install():
  if checks.torch_available():
    pytest.skip("torch is installed here")
  with pytest.raises(ImportError, match="from_pt=True converts PyTorch "
                     "weights, which needs torch: pip install torch"):
    checks.require_torch_for_from_pt(True)
  checks.require_torch_for_from_pt(False)
