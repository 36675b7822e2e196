"""img2img with Stable Diffusion's default PNDM sampler (D4M's) or DDIM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffusers import FlaxPNDMScheduler

from pqd_jax import prior as prior_lib
from tests.prior.conftest import tiny_latents

ARGS = dict(strength=0.6, guidance_scale=3.0, num_steps=10)


@pytest.fixture(scope="module")
def pndm(prior):
  return prior_lib.with_scheduler(prior, "pndm")


def _reference(prior, z, y, rng, *, strength, guidance_scale, num_steps):
  """diffusers' img2img loop in Python: PNDM stepped with its state."""
  x0 = jnp.pad(jnp.transpose(z, (0, 3, 1, 2)), ((0, 0), (0, 0), (0, 1),
                                                 (0, 1)))
  sched = prior.scheduler
  state = sched.set_timesteps(sched.create_state(), num_steps, x0.shape)
  keys = jax.vmap(jax.random.fold_in, (None, 0))(rng, jnp.arange(len(z)))
  noise = jax.vmap(lambda k: jax.random.normal(k, x0.shape[1:]))(keys)
  start = num_steps - prior_lib.sample.num_denoising_steps(strength,
                                                           num_steps)
  x = sched.add_noise(state, x0, noise,
                      jnp.full((len(z),), state.timesteps[start]))
  for i in range(start, num_steps):
    t = state.timesteps[i]
    out = prior_lib.guided_prediction(
        prior.unet, prior.params, x, t, jnp.asarray(prior.context)[y],
        prior.null_context, guidance_scale)
    step = sched.step(state, out, t, x)
    x, state = step.prev_sample, step.state
  return np.asarray(jnp.transpose(x[:, :, :5, :5], (0, 2, 3, 1)))


def test_pndm_img2img_is_diffusers_loop(pndm):
  z, y = tiny_latents()
  rng = jax.random.key(0)
  out = prior_lib.img2img(pndm, z, y, rng=rng, **ARGS)
  np.testing.assert_allclose(out, _reference(pndm, z, y, rng, **ARGS),
                             rtol=1e-4, atol=1e-5)


def test_pndm_keeps_the_noise_schedule_and_prediction(prior, pndm):
  assert isinstance(pndm.scheduler, FlaxPNDMScheduler)
  assert pndm.scheduler.config.skip_prk_steps
  for key in ("num_train_timesteps", "beta_schedule", "prediction_type"):
    assert pndm.scheduler.config[key] == prior.scheduler.config[key]


def test_pndm_and_ddim_sample_differently(prior, pndm):
  z, y = tiny_latents()
  rng = jax.random.key(0)
  a = prior_lib.img2img(prior, z, y, rng=rng, **ARGS)
  b = prior_lib.img2img(pndm, z, y, rng=rng, **ARGS)
  assert np.all(np.isfinite(b)) and not np.allclose(a, b, atol=1e-3)


def test_ddim_back_from_pndm_is_the_ddim_prior(prior, pndm):
  z, y = tiny_latents()
  rng = jax.random.key(0)
  again = prior_lib.with_scheduler(pndm, "ddim")
  np.testing.assert_allclose(prior_lib.img2img(again, z, y, rng=rng, **ARGS),
                             prior_lib.img2img(prior, z, y, rng=rng, **ARGS),
                             atol=1e-6)


def test_an_unknown_scheduler_is_refused(prior):
  with pytest.raises(ValueError, match="scheduler"):
    prior_lib.with_scheduler(prior, "euler")
