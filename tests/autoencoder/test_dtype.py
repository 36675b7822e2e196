"""The VAE in bfloat16: float32 latents and images close to float32's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pqd_jax.autoencoder import model as model_lib
from tests.autoencoder.conftest import tiny_config


@pytest.fixture(scope="module")
def ae():
  return model_lib.init_autoencoder(tiny_config(), jax.random.key(0))


@pytest.fixture(scope="module")
def images():
  return np.asarray(jax.random.uniform(jax.random.key(1), (5, 8, 8, 1),
                                       minval=-1, maxval=1))


def _dtypes(tree):
  return {str(x.dtype) for x in jax.tree.leaves(tree)}


def test_with_dtype_sets_the_module_and_casts_the_parameters(ae):
  half = model_lib.with_dtype(ae, "bfloat16")
  assert half.model.dtype == jnp.bfloat16
  assert _dtypes(half.params) == {"bfloat16"}
  assert half.scaling_factor == ae.scaling_factor
  assert _dtypes(ae.params) == {"float32"}  # the original is untouched


def test_float32_is_the_same_autoencoder(ae):
  same = model_lib.with_dtype(ae, "auto")  # float32 on a CPU
  assert same.model is ae.model
  assert all(a is b for a, b in zip(jax.tree.leaves(same.params),
                                    jax.tree.leaves(ae.params), strict=True))


def test_bfloat16_encode_and_decode_return_float32_close_to_float32(
    ae, images):
  half = model_lib.with_dtype(ae, jnp.bfloat16)
  z, z_half = model_lib.encode(ae, images), model_lib.encode(half, images)
  assert z_half.dtype == np.float32
  np.testing.assert_allclose(z_half, z, atol=0.05 * np.abs(z).max())
  x, x_half = model_lib.decode(ae, z), model_lib.decode(half, z)
  assert x_half.dtype == np.float32
  np.testing.assert_allclose(x_half, x, atol=0.05 * np.abs(x).max())
  sampled = model_lib.encode(half, images, sample=True, rng=jax.random.key(2))
  assert sampled.dtype == np.float32 and np.all(np.isfinite(sampled))


def test_load_pretrained_applies_the_dtype_asked_for(ae, images, tmp_path):
  model_lib.save_pretrained(ae, str(tmp_path / "vae"))
  half = model_lib.load_pretrained(str(tmp_path / "vae"), dtype="bfloat16")
  assert half.model.dtype == jnp.bfloat16
  assert _dtypes(half.params) == {"bfloat16"}
  np.testing.assert_array_equal(
      model_lib.encode(half, images),
      model_lib.encode(model_lib.with_dtype(ae, "bfloat16"), images))


def test_a_bfloat16_checkpoint_loads_as_float32_by_default(ae, tmp_path):
  model_lib.save_pretrained(model_lib.with_dtype(ae, "bfloat16"),
                            str(tmp_path / "vae"))
  loaded = model_lib.load_pretrained(str(tmp_path / "vae"))
  assert loaded.model.dtype == jnp.float32
  assert _dtypes(loaded.params) == {"float32"}


def test_a_dtype_that_is_not_a_compute_dtype_is_refused(ae, tmp_path):
  with pytest.raises(ValueError, match="dtype must be one of.*'float64'"):
    model_lib.load_pretrained(str(tmp_path / "nothing"), dtype="float64")
  with pytest.raises(ValueError, match="int8"):
    model_lib.with_dtype(ae, np.int8)
