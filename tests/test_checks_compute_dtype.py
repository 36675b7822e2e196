"""The compute-dtype knob: what it resolves to and what it refuses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pqd_jax import checks
from pqd_jax.configs import checks as config_checks
from pqd_jax.configs import fashion_mnist, imagenet2012


@pytest.fixture
def on_backend(monkeypatch):
  def use(name):
    monkeypatch.setattr(jax, "default_backend", lambda: name)
  return use


def test_auto_is_float32_on_a_cpu():
  if jax.default_backend() != "cpu":
    pytest.skip("the suite runs on another backend")
  assert checks.compute_dtype("auto") == jnp.float32


@pytest.mark.parametrize("backend,expected", [
    ("tpu", jnp.bfloat16), ("gpu", jnp.float32), ("cpu", jnp.float32)])
def test_auto_follows_the_backend(on_backend, backend, expected):
  on_backend(backend)
  assert checks.compute_dtype("auto") == jnp.dtype(expected)


@pytest.mark.parametrize("value,expected", [
    ("float32", jnp.float32), ("bfloat16", jnp.bfloat16),
    ("float16", jnp.float16), (jnp.bfloat16, jnp.bfloat16),
    (np.float32, jnp.float32), (jnp.dtype("float16"), jnp.float16)])
def test_names_and_dtypes_resolve(value, expected):
  assert checks.compute_dtype(value) == jnp.dtype(expected)


@pytest.mark.parametrize("value", ["fp16", "float64", np.float64, "int8",
                                   None, ""])
def test_other_values_are_refused_naming_the_value_and_the_choices(value):
  with pytest.raises(ValueError) as e:
    checks.compute_dtype(value, "config.compute_dtype")
  message = str(e.value)
  assert message.startswith("config.compute_dtype must be one of ('auto', "
                            "'float32', 'bfloat16', 'float16')")
  assert repr(value) in message and "\n" not in message


def test_float16_is_refused_on_a_tpu(on_backend):
  on_backend("tpu")
  with pytest.raises(ValueError, match=r"'float16' is not available on the "
                     r"TPU backend \(TPUs compute in bfloat16\)"):
    checks.compute_dtype("float16")
  with pytest.raises(ValueError, match="float16"):
    checks.compute_dtype(jnp.float16)
  assert checks.compute_dtype("bfloat16") == jnp.bfloat16


@pytest.mark.parametrize("get_config,dtype", [
    (fashion_mnist.get_config, "float32"), (imagenet2012.get_config, "auto")])
def test_the_configs_defaults_pass_the_checks(get_config, dtype):
  config = get_config()
  assert config.compute_dtype == dtype
  config_checks.check_config(config)


def test_the_config_check_refuses_a_bad_name():
  config = fashion_mnist.get_config()
  config.compute_dtype = "float64"
  with pytest.raises(ValueError,
                     match="config.compute_dtype must be one of .*'float64'"):
    config_checks.check_config(config)


def test_the_config_check_refuses_float16_on_a_tpu(on_backend):
  config = imagenet2012.get_config()
  config.compute_dtype = "float16"
  config_checks.check_config(config)  # a CPU computes in float16
  on_backend("tpu")
  with pytest.raises(ValueError, match="config.compute_dtype 'float16'"):
    config_checks.check_config(config)
