"""A tiny randomly initialised Stable Diffusion in the diffusers layout.

The real classes (``FlaxUNet2DConditionModel``, ``FlaxCLIPTextModel``,
``CLIPTokenizer``, ``FlaxAutoencoderKL``), a few thousand parameters each,
written with ``save_pretrained`` next to SD 1.x's PNDM scheduler config, so
that the hub loading path (``subfolder="unet"``, ``"vae"``, ...) runs here.
"""

import json
import os
import string

import jax
import ml_collections

from pqd_jax.autoencoder import model as ae_lib
from pqd_jax.prior import stable_diffusion

MAX_LENGTH = 12
HIDDEN = 16


def write_tokenizer(directory: str) -> int:
  """A CLIP BPE tokenizer over single letters; returns the vocab size."""
  import transformers

  os.makedirs(directory)
  tokens = ["!", "<|startoftext|>", "<|endoftext|>"]
  tokens += list(string.ascii_lowercase) + [c + "</w>"
                                             for c in string.ascii_lowercase]
  tokens += [",", ",</w>"]
  with open(os.path.join(directory, "vocab.json"), "w") as f:
    json.dump({t: i for i, t in enumerate(tokens)}, f)
  with open(os.path.join(directory, "merges.txt"), "w") as f:
    f.write("#version: 0.2\n")
  tok = transformers.CLIPTokenizer(
      os.path.join(directory, "vocab.json"),
      os.path.join(directory, "merges.txt"), model_max_length=MAX_LENGTH)
  tok.save_pretrained(directory)
  return len(tokens)


# The published SD-1 VAE (AutoencoderKL of CompVis/stable-diffusion-v1-4):
# 512² RGB images to 64² × 4 latents.
SD1_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
               latent_channels=4, norm_num_groups=32)


def write_tiny_sd(root: str, *, with_vae: bool = False,
                  image_size: int = 16, sd1_vae: bool = False) -> str:
  """Writes tokenizer, text encoder, UNet (8×8×4), scheduler (and a VAE).

  The VAE maps ``image_size``² RGB images to ``image_size / 2``² × 4
  latents, so ``image_size=16`` matches the UNet's 8×8 sample size; with
  ``sd1_vae`` it is SD-1's VAE architecture (random weights), whose
  latents are ``image_size / 8`` on a side (the UNet takes any side).
  """
  import transformers

  vocab = write_tokenizer(os.path.join(root, "tokenizer"))
  text = transformers.FlaxCLIPTextModel(transformers.CLIPTextConfig(
      vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=32,
      num_hidden_layers=1, num_attention_heads=2,
      max_position_embeddings=MAX_LENGTH), seed=0)
  text.save_pretrained(os.path.join(root, "text_encoder"))
  unet = stable_diffusion.FlaxUNet2DConditionModel(
      sample_size=image_size // 2, in_channels=4, out_channels=4,
      down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
      block_out_channels=(32, 32), layers_per_block=1, attention_head_dim=8,
      cross_attention_dim=HIDDEN)
  unet.save_pretrained(os.path.join(root, "unet"),
                       params=unet.init_weights(jax.random.key(0)))
  os.makedirs(os.path.join(root, "scheduler"))
  with open(os.path.join(root, "scheduler", "scheduler_config.json"),
            "w") as f:
    json.dump({
        "_class_name": "PNDMScheduler", "beta_start": 0.00085,
        "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000, "set_alpha_to_one": False,
        "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False}, f)
  if with_vae:
    shape = SD1_VAE if sd1_vae else dict(
        block_out_channels=(8, 8), layers_per_block=1, latent_channels=4,
        norm_num_groups=4)
    vae = ae_lib.init_autoencoder(ml_collections.ConfigDict(dict(
        channels=3, image_size=image_size, **shape)), jax.random.key(1))
    ae_lib.save_pretrained(vae._replace(scaling_factor=0.18215),
                           os.path.join(root, "vae"))
  return root
