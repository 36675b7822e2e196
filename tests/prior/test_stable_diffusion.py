"""The Stable Diffusion path on a tiny random SD saved in the diffusers layout.

The UNet, text encoder and tokenizer are the real classes, randomly
initialised, written with ``save_pretrained`` (the scheduler config is SD
1.x's PNDM one, as on the hub) and loaded back through
``load_stable_diffusion``.
"""

import json
import string

import jax
import numpy as np
import pytest

from pqd_jax.prior import sample, stable_diffusion

transformers = pytest.importorskip("transformers")

MAX_LENGTH = 12
HIDDEN = 16


def _write_tokenizer(directory):
  directory.mkdir()
  tokens = ["!", "<|startoftext|>", "<|endoftext|>"]
  tokens += list(string.ascii_lowercase) + [c + "</w>"
                                             for c in string.ascii_lowercase]
  tokens += [",", ",</w>"]
  (directory / "vocab.json").write_text(
      json.dumps({t: i for i, t in enumerate(tokens)}))
  (directory / "merges.txt").write_text("#version: 0.2\n")
  tok = transformers.CLIPTokenizer(
      str(directory / "vocab.json"), str(directory / "merges.txt"),
      model_max_length=MAX_LENGTH)
  tok.save_pretrained(str(directory))
  return len(tokens)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
  root = tmp_path_factory.mktemp("tiny_sd")
  vocab = _write_tokenizer(root / "tokenizer")
  text = transformers.FlaxCLIPTextModel(transformers.CLIPTextConfig(
      vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=32,
      num_hidden_layers=1, num_attention_heads=2,
      max_position_embeddings=MAX_LENGTH), seed=0)
  text.save_pretrained(str(root / "text_encoder"))
  unet = stable_diffusion.FlaxUNet2DConditionModel(
      sample_size=8, in_channels=4, out_channels=4,
      down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
      block_out_channels=(32, 32), layers_per_block=1, attention_head_dim=8,
      cross_attention_dim=HIDDEN)
  unet.save_pretrained(str(root / "unet"),
                       params=unet.init_weights(jax.random.key(0)))
  (root / "scheduler").mkdir()
  (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({
      "_class_name": "PNDMScheduler", "beta_start": 0.00085,
      "beta_end": 0.012, "beta_schedule": "scaled_linear",
      "num_train_timesteps": 1000, "set_alpha_to_one": False,
      "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False}))
  return str(root)


def test_loads_a_prior_with_one_prompt_per_class(tiny_sd):
  prior = stable_diffusion.load_stable_diffusion(tiny_sd, ["cat", "dog"])
  assert prior.latent_shape == (8, 8, 4)
  assert prior.context.shape == (2, MAX_LENGTH, HIDDEN)
  assert prior.null_context.shape == (MAX_LENGTH, HIDDEN)
  assert not np.allclose(prior.context[0], prior.context[1])


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
