"""The Stable Diffusion path on a tiny random SD saved in the diffusers layout.

The UNet, text encoder and tokenizer are the real classes, randomly
initialised, written with ``save_pretrained`` (the scheduler config is SD
1.x's PNDM one, as on the hub) and loaded back through
``load_stable_diffusion``.
"""

import jax
import numpy as np
import pytest

from pqd_jax.prior import sample, stable_diffusion

transformers = pytest.importorskip("transformers")

from tests import tiny_sd as tiny_sd_lib  # noqa: E402

MAX_LENGTH, HIDDEN = tiny_sd_lib.MAX_LENGTH, tiny_sd_lib.HIDDEN


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
  return tiny_sd_lib.write_tiny_sd(str(tmp_path_factory.mktemp("tiny_sd")))


def test_loads_a_prior_with_one_prompt_per_class(tiny_sd):
  prior = stable_diffusion.load_stable_diffusion(tiny_sd, ["cat", "dog"])
  assert prior.latent_shape == (8, 8, 4)
  assert prior.context.shape == (2, MAX_LENGTH, HIDDEN)
  assert prior.null_context.shape == (MAX_LENGTH, HIDDEN)
  assert not np.allclose(prior.context[0], prior.context[1])


def test_memory_efficient_attention_gives_the_same_prediction(tiny_sd):
  full = stable_diffusion.load_stable_diffusion(tiny_sd, ["cat"])
  chunked = stable_diffusion.load_stable_diffusion(
      tiny_sd, ["cat"], memory_efficient_attention=True)
  assert chunked.unet.use_memory_efficient_attention
  assert not full.unet.use_memory_efficient_attention
  x = jax.random.normal(jax.random.key(0), (2, 4, 8, 8))
  out = [sample.guided_prediction(p.unet, p.params, x, 10,
                                  p.context[np.array([0, 0])], p.null_context,
                                  4.0)
         for p in (full, chunked)]
  np.testing.assert_allclose(out[0], out[1], rtol=1e-4, atol=1e-4)


def test_contexts_are_the_clip_encodings_of_the_prompts(tiny_sd):
  prior = stable_diffusion.load_stable_diffusion(
      tiny_sd, ["cat"], prompt_template="a {}")
  tok = transformers.CLIPTokenizer.from_pretrained(tiny_sd,
                                                   subfolder="tokenizer")
  text = transformers.FlaxCLIPTextModel.from_pretrained(
      tiny_sd, subfolder="text_encoder")
  ids = tok(["a cat", "cartoon, anime, painting"], padding="max_length",
            max_length=MAX_LENGTH, truncation=True,
            return_tensors="np").input_ids
  expected = np.asarray(text(ids)[0])
  np.testing.assert_allclose(np.asarray(prior.context[0]), expected[0],
                             atol=1e-5)
  np.testing.assert_allclose(np.asarray(prior.null_context), expected[1],
                             atol=1e-5)


def test_img2img_runs_with_d4m_settings(tiny_sd):
  prior = stable_diffusion.load_stable_diffusion(tiny_sd, ["cat", "dog"])
  z = np.random.default_rng(0).standard_normal((3, 8, 8, 4)).astype(
      np.float32)
  run = lambda: sample.img2img(prior, z, np.array([0, 1, 0]), strength=0.7,
                               guidance_scale=8.0, num_steps=5,
                               rng=jax.random.key(0))
  out = run()
  assert out.shape == z.shape and np.all(np.isfinite(out))
  np.testing.assert_array_equal(out, run())


def test_the_scheduler_follows_the_checkpoint(tiny_sd):
  prior = stable_diffusion.load_stable_diffusion(tiny_sd, ["cat"])
  assert prior.scheduler.config.beta_schedule == "scaled_linear"
  assert prior.scheduler.config.steps_offset == 1


def test_a_template_without_a_slot_is_refused(tiny_sd):
  with pytest.raises(ValueError, match="prompt_template must contain"):
    stable_diffusion.load_stable_diffusion(tiny_sd, ["cat"],
                                           prompt_template="a photo")


def test_a_missing_model_is_reported(tmp_path):
  with pytest.raises(FileNotFoundError, match="Could not load Stable"):
    stable_diffusion.load_stable_diffusion(str(tmp_path), ["cat"])
