"""The prior in bfloat16: parameters halved, float32 latents back.

The dtype is not stored with a saved prior: ``load_prior`` applies the one
it is given, so a prior cached on one backend computes as asked on another.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pqd_jax import prior as prior_lib
from pqd_jax.prior import model, sample
from tests.prior.conftest import tiny_latents


def _dtypes(tree):
  return {str(x.dtype) for x in jax.tree.leaves(tree)}


def _img2img(p, z, y, guidance_scale=2.0):
  return sample.img2img(p, z, y, strength=0.5, guidance_scale=guidance_scale,
                        num_steps=4, rng=jax.random.key(0))


@pytest.fixture(scope="module")
def half(prior):
  return prior_lib.with_dtype(prior, "bfloat16")


def test_with_dtype_casts_the_unet_parameters_and_contexts(prior, half):
  assert half.unet.dtype == jnp.bfloat16
  assert _dtypes(half.params) == {"bfloat16"}
  assert half.context.dtype == half.null_context.dtype == jnp.bfloat16
  assert _dtypes(prior.params) == {"float32"}  # the original is untouched
  assert model.with_dtype(prior, "float32").unet is prior.unet


def test_bfloat16_img2img_returns_float32_close_to_float32(prior, half):
  z, y = tiny_latents()
  out, out_half = _img2img(prior, z, y), _img2img(half, z, y)
  assert out_half.dtype == np.float32
  np.testing.assert_allclose(out_half, out, atol=0.05 * np.abs(out).max())


def test_the_dtype_is_given_at_load_not_saved(prior, half, tmp_path):
  model.save_prior(half, str(tmp_path / "p"))
  with np.load(tmp_path / "p" / "context.npz") as ctx:
    assert ctx["context"].dtype == ctx["null_context"].dtype == np.float32
  loaded = model.load_prior(str(tmp_path / "p"))
  assert loaded.unet.dtype == jnp.float32
  assert _dtypes(loaded.params) == {"float32"}
  assert loaded.context.dtype == jnp.float32
  again = model.load_prior(str(tmp_path / "p"), dtype=jnp.bfloat16)
  assert again.unet.dtype == jnp.bfloat16
  assert _dtypes(again.params) == {"bfloat16"}
  z, y = tiny_latents()
  # Guidance 1: the conditional branch alone (no guided_prediction).
  out = _img2img(again, z, y, guidance_scale=1.0)
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, _img2img(half, z, y, guidance_scale=1.0))


def test_a_float32_prior_round_trips_bitwise(prior, tmp_path):
  model.save_prior(prior, str(tmp_path / "p"))
  loaded = model.load_prior(str(tmp_path / "p"), dtype="auto")
  z, y = tiny_latents()
  np.testing.assert_array_equal(_img2img(loaded, z, y), _img2img(prior, z, y))


def test_a_bad_dtype_is_refused_before_loading(tmp_path):
  with pytest.raises(ValueError, match="dtype must be one of.*'float64'"):
    model.load_prior(str(tmp_path), dtype="float64")


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
  pytest.importorskip("transformers")
  from tests import tiny_sd as tiny_sd_lib

  return tiny_sd_lib.write_tiny_sd(str(tmp_path_factory.mktemp("tiny_sd")))


def test_stable_diffusion_loads_and_reloads_in_the_dtype_asked(tiny_sd,
                                                                tmp_path):
  from pqd_jax.prior import stable_diffusion

  sd = stable_diffusion.load_stable_diffusion(tiny_sd, ["cat", "dog"],
                                              dtype=jnp.bfloat16)
  assert sd.unet.dtype == jnp.bfloat16
  assert _dtypes(sd.params) == {"bfloat16"}
  assert sd.context.dtype == jnp.bfloat16
  # As the pipeline caches it: loaded in float32, saved, reloaded in bf16.
  model.save_prior(stable_diffusion.load_stable_diffusion(
      tiny_sd, ["cat", "dog"]), str(tmp_path / "p"))
  loaded = model.load_prior(str(tmp_path / "p"), dtype="bfloat16")
  assert loaded.unet.dtype == jnp.bfloat16
  assert _dtypes(loaded.params) == {"bfloat16"}
  assert loaded.context.dtype == jnp.bfloat16
