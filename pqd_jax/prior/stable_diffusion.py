"""The Stable Diffusion prior: pretrained UNet, DDIM and CLIP class prompts.

For ImageNet-scale data (GPU/TPU) the prior is a pretrained Stable Diffusion
checkpoint, from a hub id or a local directory in the diffusers layout
(``unet/``, ``scheduler/``, ``text_encoder/``, ``tokenizer/``). As in D4M,
each class is conditioned on a prompt built from its name, and the negative
prompt ("cartoon, anime, painting") is the unconditional branch of
classifier-free guidance; D4M samples with guidance 8, strength 0.7 and 50
steps. The CLIP text encoder needs the ``sd`` extra (``transformers<5``, the
last with Flax); it runs once here, so :func:`pqd_jax.prior.img2img` only
sees the encoded prompts.
"""

import os
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from diffusers import FlaxDDIMScheduler, FlaxUNet2DConditionModel
from jax.typing import DTypeLike

from pqd_jax import checks, diffusers_compat
from pqd_jax.prior.model import Prior, with_dtype

__all__ = ["D4M_NEGATIVE_PROMPT", "encode_prompts", "load_stable_diffusion"]

D4M_NEGATIVE_PROMPT = "cartoon, anime, painting"


def _transformers():
  try:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import transformers
  except ImportError as e:
    raise ImportError(
        "Stable Diffusion prompts need Flax CLIP from transformers<5: "
        "pip install 'pqd_jax[sd]'.") from e
  return transformers


def encode_prompts(tokenizer, text_encoder, prompts: Sequence[str]
                   ) -> np.ndarray:
  """CLIP encodings ``[len(prompts), max_length, d]`` of padded prompts."""
  ids = tokenizer(list(prompts), padding="max_length",
                  max_length=tokenizer.model_max_length, truncation=True,
                  return_tensors="np").input_ids
  return np.asarray(text_encoder(ids, params=text_encoder.params)[0])


def load_stable_diffusion(
    path: str,
    class_names: Sequence[str],
    *,
    prompt_template: str = "{}",
    negative_prompt: str = D4M_NEGATIVE_PROMPT,
    revision: str | None = None,
    from_pt: bool = False,
    dtype: DTypeLike = jnp.float32,
    memory_efficient_attention: bool = False,
) -> Prior:
  """Loads a Stable Diffusion UNet, scheduler and class prompts as a prior.

  Args:
    path: a hub id (e.g. ``"CompVis/stable-diffusion-v1-4"``) or a local
      directory in the diffusers layout.
    class_names: one name per class; the prompt of class ``i`` is
      ``prompt_template.format(class_names[i])`` (D4M: the name itself).
    prompt_template: a format string with one ``{}``.
    negative_prompt: the unconditional branch of guidance.
    revision: hub revision (e.g. ``"flax"`` or ``"bf16"``).
    from_pt: convert PyTorch weights (needs torch).
    dtype: computation dtype of the UNet and text encoder; the UNet's
      parameters and the prompt encodings are cast to it (bfloat16 halves
      the UNet's 3.2 GiB). A prior saved by ``save_prior`` does not keep
      it: give it again to ``load_prior``.
    memory_efficient_attention: the UNet's attention in chunks (diffusers'
      ``use_memory_efficient_attention``): the same outputs, a fraction of
      the memory at 64×64 latents (benchmarks/RESULTS.md, sd_memory).

  Returns:
    The prior; its ``latent_shape`` is the UNet's ``(s, s, in_channels)``.

  Raises:
    ValueError: for no class names, a template without ``{}`` or a dtype
      that is not a compute dtype on this backend.
    FileNotFoundError: when ``path`` has no such model.
    ImportError: without the ``sd`` extra, or torch for ``from_pt``.
  """
  dtype = checks.compute_dtype(dtype, "dtype")
  checks.require_torch_for_from_pt(from_pt)
  if not class_names:
    raise ValueError("class_names is empty: one prompt per class is needed.")
  if "{}" not in prompt_template:
    raise ValueError(f"prompt_template must contain '{{}}' for the class "
                     f"name, got {prompt_template!r}.")
  transformers = _transformers()
  kwargs = {"revision": revision} if revision else {}
  try:
    unet, params = FlaxUNet2DConditionModel.from_pretrained(
        path, subfolder="unet", dtype=dtype, from_pt=from_pt,
        use_memory_efficient_attention=memory_efficient_attention, **kwargs)
    scheduler, _ = FlaxDDIMScheduler.from_pretrained(
        path, subfolder="scheduler", **kwargs)
    tokenizer = transformers.CLIPTokenizer.from_pretrained(
        path, subfolder="tokenizer", **kwargs)
    text_encoder = transformers.FlaxCLIPTextModel.from_pretrained(
        path, subfolder="text_encoder", dtype=dtype, from_pt=from_pt,
        **kwargs)
  except OSError as e:
    raise FileNotFoundError(
        f"Could not load Stable Diffusion from {path!r}: {e}") from e
  prompts = [prompt_template.format(name) for name in class_names]
  context = encode_prompts(tokenizer, text_encoder, prompts)
  null_context = encode_prompts(tokenizer, text_encoder, [negative_prompt])[0]
  unet = diffusers_compat.hashable_module(unet)
  side = int(unet.config.sample_size)
  return with_dtype(
      Prior(unet=unet, params=params, scheduler=scheduler,
            context=jnp.asarray(context),
            null_context=jnp.asarray(null_context),
            latent_shape=(side, side, int(unet.config.in_channels)),
            class_names=tuple(class_names)), dtype)
