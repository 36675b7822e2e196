import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pqd_jax.prior import sample as sample_lib
from tests.conftest import run_on_fake_devices
from tests.prior.conftest import tiny_latents


def _run(prior, z, y, **kw):
  args = dict(strength=0.6, guidance_scale=3.0, num_steps=5,
              rng=jax.random.key(0))
  args.update(kw)
  return sample_lib.img2img(prior, z, y, **args)


def test_strength_zero_returns_the_latents(prior):
  z, y = tiny_latents()
  np.testing.assert_array_equal(_run(prior, z, y, strength=0.0), z)


def test_output_shape_and_finite(prior):
  z, y = tiny_latents()
  out = _run(prior, z, y)
  assert out.shape == z.shape and out.dtype == np.float32
  assert np.all(np.isfinite(out))


def test_same_seed_same_output(prior):
  z, y = tiny_latents()
  np.testing.assert_array_equal(_run(prior, z, y), _run(prior, z, y))


def test_other_seed_other_output(prior):
  z, y = tiny_latents()
  assert not np.allclose(_run(prior, z, y),
                         _run(prior, z, y, rng=jax.random.key(1)))


def test_output_does_not_depend_on_the_batch_size(prior):
  z, y = tiny_latents(n=5)
  np.testing.assert_allclose(_run(prior, z, y, batch_size=2),
                             _run(prior, z, y, batch_size=8), atol=1e-5)


def test_a_set_sampled_in_parts_is_the_set_sampled_at_once(prior):
  z, y = tiny_latents(n=5)
  parts = np.concatenate([_run(prior, z[:2], y[:2], batch_size=4),
                          _run(prior, z[2:], y[2:], batch_size=4,
                               first_index=2)])
  # Same noise per latent; only the float rounding of other batch contents.
  np.testing.assert_allclose(parts, _run(prior, z, y, batch_size=4),
                             atol=1e-5)


def test_a_negative_first_index_is_refused(prior):
  z, y = tiny_latents()
  with pytest.raises(ValueError, match="first_index"):
    _run(prior, z, y, first_index=-1)


def test_strength_one_forgets_the_input(prior):
  z, y = tiny_latents()
  np.testing.assert_allclose(_run(prior, z, y, strength=1.0),
                             _run(prior, z + 5.0, y, strength=1.0), atol=1e-5)


def test_lower_strength_stays_closer_to_the_input(prior):
  z, y = tiny_latents()
  near = np.abs(_run(prior, z, y, strength=0.2) - z).mean()
  far = np.abs(_run(prior, z, y, strength=0.8) - z).mean()
  assert near < far


def test_guidance_scale_one_is_the_conditional_prediction(prior):
  z, y = tiny_latents()
  x = jnp.transpose(jnp.pad(jnp.asarray(z), ((0, 0), (0, 1), (0, 1), (0, 0))),
                    (0, 3, 1, 2))
  context = prior.context[y]
  t = jnp.full((z.shape[0],), 500)
  cond = prior.unet.apply({"params": prior.params}, x, t, context).sample
  guided = sample_lib.guided_prediction(prior.unet, prior.params, x, t,
                                        context, prior.null_context, 1.0)
  np.testing.assert_allclose(np.asarray(guided), np.asarray(cond), atol=1e-5)


def test_guidance_scale_changes_the_output(prior):
  z, y = tiny_latents()
  assert not np.allclose(_run(prior, z, y, guidance_scale=1.0),
                         _run(prior, z, y, guidance_scale=4.0))


def test_number_of_denoising_steps():
  assert sample_lib.num_denoising_steps(0.7, 50) == 35
  assert sample_lib.num_denoising_steps(1.0, 50) == 50
  assert sample_lib.num_denoising_steps(0.0, 50) == 0


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan")])
def test_strength_outside_the_unit_interval_is_refused(prior, strength):
  z, y = tiny_latents()
  with pytest.raises(ValueError, match="strength must be in"):
    _run(prior, z, y, strength=strength)


def test_classes_out_of_range_are_refused(prior):
  z, _ = tiny_latents()
  with pytest.raises(ValueError, match=r"classes must be in \[0, 3\).*\[3\]"):
    _run(prior, z, np.array([0, 1, 2, 3, 0, 1]))


def test_latents_of_other_channels_are_refused(prior):
  z, y = tiny_latents(shape=(5, 5, 3))
  with pytest.raises(ValueError, match=r"shape \[b, h, w, 2\]"):
    _run(prior, z, y)


def test_latents_of_another_side_are_denoised_at_their_side(prior):
  z, y = tiny_latents(shape=(9, 9, 2))
  out = _run(prior, z, y)
  assert out.shape == z.shape and np.isfinite(out).all()


def test_negative_guidance_is_refused(prior):
  z, y = tiny_latents()
  with pytest.raises(ValueError, match="guidance_scale"):
    _run(prior, z, y, guidance_scale=-1.0)


_SHARDED = """
import sys
import jax, numpy as np
from pqd_jax.prior import sample
from tests.prior.conftest import tiny_latents, tiny_prior
assert jax.device_count() == int(sys.argv[1])
z, y = tiny_latents(n=7)
out = sample.img2img(tiny_prior(), z, y, strength=0.6, guidance_scale=3.0,
                     num_steps=5, rng=jax.random.key(0), batch_size=4)
np.save(sys.argv[2], out)
"""


def test_four_devices_give_the_same_output_as_one(tmp_path):
  run_on_fake_devices(_SHARDED, "4", str(tmp_path / "4.npy"))
  run_on_fake_devices(_SHARDED, "1", str(tmp_path / "1.npy"), devices=1)
  np.testing.assert_allclose(np.load(tmp_path / "4.npy"),
                             np.load(tmp_path / "1.npy"), atol=1e-5)
