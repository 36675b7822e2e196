import os
import re
import shutil

import jax
import numpy as np
import pytest

from pqd_jax.prior import model
from pqd_jax.prior import sample as sample_lib
from tests.prior.conftest import tiny_config, tiny_latents


def test_padded_side_divides_by_the_blocks():
  assert model.padded_side(7, 2) == 8
  assert model.padded_side(8, 3) == 8
  assert model.padded_side(9, 3) == 12


def test_unet_sees_padded_square_latents():
  unet = model.build_unet(tiny_config(), (7, 7, 4))
  assert unet.config.sample_size == 8
  assert unet.config.in_channels == unet.config.out_channels == 4
  assert unet.config.down_block_types == ("DownBlock2D",
                                          "CrossAttnDownBlock2D")


def test_non_square_latents_are_refused():
  with pytest.raises(ValueError, match=r"square latents.*\(7, 6, 4\)"):
    model.build_unet(tiny_config(), (7, 6, 4))


def test_channels_the_group_norm_cannot_split_are_refused():
  with pytest.raises(ValueError, match=r"multiples of 32.*\(32, 48\)"):
    model.build_unet(tiny_config(block_out_channels=(32, 48)), (8, 8, 4))


def test_unknown_prediction_type_is_refused():
  with pytest.raises(ValueError, match="'sample'"):
    model.build_scheduler(tiny_config(prediction_type="sample"))


def test_scheduler_round_trip_matches_float64_ddim(prior):
  """add_noise at t, one DDIM step with the true noise = add_noise at t'."""
  scheduler = prior.scheduler
  state = scheduler.set_timesteps(scheduler.create_state(), 50)
  gen = np.random.default_rng(0)
  x0 = gen.standard_normal((3, 2, 4, 4)).astype(np.float32)
  eps = gen.standard_normal((3, 2, 4, 4)).astype(np.float32)
  t, t_prev = 700, 680
  xt = scheduler.add_noise(state, x0, eps, np.full(3, t))
  prev = scheduler.step(state, eps, t, xt).prev_sample
  a = np.asarray(state.common.alphas_cumprod, np.float64)
  expected_xt = np.sqrt(a[t]) * x0 + np.sqrt(1 - a[t]) * eps
  expected_prev = np.sqrt(a[t_prev]) * x0 + np.sqrt(1 - a[t_prev]) * eps
  np.testing.assert_allclose(np.asarray(xt), expected_xt, atol=1e-5)
  np.testing.assert_allclose(np.asarray(prev), expected_prev, atol=1e-4)


def test_saved_prior_loads_back_to_the_same_samples(prior, tmp_path):
  model.save_prior(prior, str(tmp_path / "p"), metadata={"num_steps": 3})
  loaded = model.load_prior(str(tmp_path / "p"))
  assert loaded.latent_shape == prior.latent_shape
  assert loaded.class_names == prior.class_names
  assert model.read_metadata(str(tmp_path / "p")) == {"num_steps": 3}
  z, y = tiny_latents()
  run = lambda p: sample_lib.img2img(p, z, y, strength=0.5,
                                     guidance_scale=2.0, num_steps=4,
                                     rng=jax.random.key(0))
  np.testing.assert_array_equal(run(prior), run(loaded))


def test_loading_an_incomplete_directory_is_refused(tmp_path):
  with pytest.raises(ValueError, match="not a saved prior"):
    model.load_prior(str(tmp_path))


@pytest.fixture(scope="module")
def saved(prior, tmp_path_factory):
  path = tmp_path_factory.mktemp("saved") / "p"
  model.save_prior(prior, str(path), metadata={"num_steps": 3})
  return path


# A file of a saved prior, and the path and reason the error names: diffusers
# names a cut config in its message, a cut weights file nowhere.
DAMAGED_FILES = {
    "prior.json": ("prior.json", "JSONDecodeError"),
    "context.npz": ("context.npz", "BadZipFile"),
    "unet/diffusion_flax_model.msgpack": ("unet", "ValueError: Unpack failed"),
    "unet/config.json": ("unet", "OSError: .*unet/config.json"),
    "scheduler/scheduler_config.json": ("scheduler",
                                        "OSError: .*scheduler_config.json"),
}


@pytest.mark.parametrize("name", DAMAGED_FILES)
def test_a_truncated_file_of_a_saved_prior_is_named(saved, tmp_path, name):
  copy = tmp_path / "p"
  shutil.copytree(saved, copy)
  os.truncate(copy / name, os.path.getsize(copy / name) // 2)
  named, reason = DAMAGED_FILES[name]
  with pytest.raises(ValueError, match=(
      rf"cannot read {re.escape(str(copy / named))}: {reason}.*; the saved "
      "prior is truncated or corrupt: save or copy it again$")):
    model.load_prior(str(copy))


def test_read_metadata_of_a_truncated_prior_json_names_it(saved, tmp_path):
  copy = tmp_path / "p"
  shutil.copytree(saved, copy)
  os.truncate(copy / "prior.json", 20)
  with pytest.raises(ValueError, match=r"prior.json: JSONDecodeError"):
    model.read_metadata(str(copy))
