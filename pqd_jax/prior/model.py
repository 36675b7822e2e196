"""The latent diffusion prior: a conditional UNet, a DDIM scheduler, contexts.

One :class:`Prior` serves both cases. For the embedded default it is a small
class-conditional ``FlaxUNet2DConditionModel`` trained here on the VAE
latents (:mod:`pqd_jax.prior.train`): each class is a learned embedding used
as a one-token ``encoder_hidden_states``, and one extra "null" embedding is
the unconditional branch of classifier-free guidance. For Stable Diffusion
(:mod:`pqd_jax.prior.stable_diffusion`) the contexts are the CLIP text
encodings of the class prompts and of the negative prompt. Either way the
sampler (:mod:`pqd_jax.prior.sample`) only sees ``context[class]`` and
``null_context``.

Latents are NHWC, ``[b, h, w, c]``, already scaled by the VAE's scaling
factor. The UNet halves the side once per block, so latents whose side does
not divide are zero-padded at the bottom and right for the UNet and cropped
back (7×7 Fashion-MNIST latents run as 8×8).

The UNet may compute in bfloat16 or float16 (:func:`with_dtype`): its
parameters and the contexts are cast to that dtype, the sampler's outputs
stay float32. The dtype is not saved with a prior; it is given at each
:func:`load_prior`, so a saved prior is the same on every backend.
"""

import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from diffusers import FlaxDDIMScheduler, FlaxUNet2DConditionModel
from jax.typing import DTypeLike

from pqd_jax import checks, diffusers_compat, workdir

__all__ = [
    "Prior",
    "build_scheduler",
    "build_unet",
    "load_prior",
    "padded_side",
    "read_metadata",
    "save_prior",
    "with_dtype",
]

_PRIOR_FILE = "prior.json"
_CONTEXT_FILE = "context.npz"
# What to do about a saved prior that is cut short or corrupt (a pipeline
# stage that loads its own artefact says more: pqd_jax.workdir.advise).
_DAMAGED = "the saved prior is truncated or corrupt: save or copy it again"


class Prior(NamedTuple):
  """A conditional latent diffusion model ready for sampling.

  Attributes:
    unet: the ``FlaxUNet2DConditionModel`` (NCHW inside; its ``config``
      holds the shapes).
    params: the UNet's parameters.
    scheduler: a ``FlaxDDIMScheduler`` (its ``config.prediction_type`` says
      what the UNet predicts).
    context: ``[num_classes, l, d]`` conditioning of each class.
    null_context: ``[l, d]`` the unconditional (or negative-prompt)
      conditioning of classifier-free guidance.
    latent_shape: ``(h, w, c)`` of the latents (before any padding).
    class_names: one name per class.
  """

  unet: FlaxUNet2DConditionModel
  params: Any
  scheduler: FlaxDDIMScheduler
  context: jnp.ndarray
  null_context: jnp.ndarray
  latent_shape: tuple[int, int, int]
  class_names: tuple[str, ...]

  @property
  def num_classes(self) -> int:
    """The number of classes (rows of ``context``)."""
    return int(self.context.shape[0])


def with_dtype(prior: Prior, dtype: DTypeLike) -> Prior:
  """The prior's UNet computing in ``dtype``, parameters and contexts cast.

  Casting the parameters is what halves the UNet's device memory in
  bfloat16 (diffusers' ``to_bf16``); the contexts only enter the UNet's
  cross-attention, which casts them to ``dtype`` anyway.

  Args:
    prior: the prior.
    dtype: float32, bfloat16 or float16, or a name that
      :func:`pqd_jax.checks.compute_dtype` resolves (``"auto"``).

  Returns:
    The prior with the UNet's ``dtype`` set and its floating parameters and
    contexts in ``dtype`` (leaves already in it are kept as they are).

  Raises:
    ValueError: for a dtype that is not a compute dtype on this backend.
  """
  dtype = checks.compute_dtype(dtype, "dtype")
  unet = (prior.unet if jnp.dtype(prior.unet.dtype) == dtype
          else prior.unet.clone(dtype=dtype))
  params, context, null_context = diffusers_compat.cast_floating(
      (prior.params, prior.context, prior.null_context), dtype)
  return prior._replace(unet=unet, params=params, context=context,
                        null_context=null_context)


def padded_side(side: int, num_blocks: int) -> int:
  """The smallest side ≥ ``side`` that ``num_blocks`` UNet blocks can halve."""
  factor = 2 ** (num_blocks - 1)
  return -(-side // factor) * factor


def build_unet(config: Any, latent_shape: tuple[int, int, int]
               ) -> FlaxUNet2DConditionModel:
  """A small ``FlaxUNet2DConditionModel`` for ``[h, w, c]`` latents.

  Args:
    config: with ``block_out_channels`` (multiples of 32: the UNet's group
      norms have 32 groups), ``layers_per_block``, ``attention_head_dim``,
      ``cross_attention_dim`` and ``attention`` (``"all"``: cross-attention
      blocks at every resolution; ``"low"``: only below the first).
    latent_shape: ``(h, w, c)``; ``h`` must equal ``w``.

  Returns:
    The module (initialise with ``unet.init_weights(rng)``).

  Raises:
    ValueError: for non-square latents, channels the norms cannot group or
      the attention heads cannot split.
  """
  h, w, c = latent_shape
  if h != w:
    raise ValueError(f"The prior needs square latents, got {latent_shape}.")
  channels = tuple(config.block_out_channels)
  if not channels or any(ch % 32 for ch in channels):
    raise ValueError(f"block_out_channels must be non-empty multiples of 32 "
                     f"(GroupNorm(32) in the UNet), got {channels}.")
  heads = config.attention_head_dim  # diffusers' name for the head count
  if any(ch % heads for ch in channels):
    raise ValueError(f"attention_head_dim={heads} (the number of attention "
                     f"heads) must divide every block_out_channels, got "
                     f"{channels}.")
  if config.attention not in ("all", "low"):
    raise ValueError(f"attention must be 'all' or 'low', got "
                     f"{config.attention!r}.")
  n = len(channels)
  attn = [config.attention == "all" or i > 0 for i in range(n)]
  down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn)
  up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D"
             for a in reversed(attn))
  return FlaxUNet2DConditionModel(
      sample_size=padded_side(h, n), in_channels=c, out_channels=c,
      down_block_types=down, up_block_types=up, block_out_channels=channels,
      layers_per_block=config.layers_per_block,
      attention_head_dim=config.attention_head_dim,
      cross_attention_dim=config.cross_attention_dim)


def build_scheduler(config: Any) -> FlaxDDIMScheduler:
  """A ``FlaxDDIMScheduler`` from a config.

  Args:
    config: with ``num_train_timesteps``, ``beta_schedule`` and
      ``prediction_type`` (``"epsilon"`` or ``"v_prediction"``).

  Raises:
    ValueError: for an unknown prediction type.
  """
  if config.prediction_type not in ("epsilon", "v_prediction"):
    raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', "
                     f"got {config.prediction_type!r}.")
  return FlaxDDIMScheduler(
      num_train_timesteps=config.num_train_timesteps,
      beta_schedule=config.beta_schedule, clip_sample=False,
      set_alpha_to_one=True, prediction_type=config.prediction_type)


def save_prior(prior: Prior, directory: str,
               metadata: dict | None = None) -> None:
  """Writes the prior as diffusers folders plus its contexts.

  ``directory/unet`` and ``directory/scheduler`` are ``save_pretrained``
  folders (loadable by diffusers itself), ``context.npz`` holds the
  contexts (float32) and ``prior.json`` the latent shape and class names,
  written last: a directory without it is incomplete. The whole directory
  is written under a temporary name and renamed into place. The UNet's
  parameters are written in their dtype; its compute dtype is not written
  (:func:`load_prior` takes it).

  Args:
    prior: the prior.
    directory: where to write it.
    metadata: JSON-able facts stored in ``prior.json`` (e.g. the training
      steps), read back by :func:`read_metadata`.
  """
  with workdir.atomic_directory(directory) as tmp:
    prior.unet.save_pretrained(os.path.join(tmp, "unet"),
                               params=jax.device_get(prior.params))
    prior.scheduler.save_pretrained(os.path.join(tmp, "scheduler"))
    np.savez(os.path.join(tmp, _CONTEXT_FILE),
             context=np.asarray(prior.context, np.float32),
             null_context=np.asarray(prior.null_context, np.float32))
    with open(os.path.join(tmp, _PRIOR_FILE), "w") as f:
      json.dump({"latent_shape": list(prior.latent_shape),
                 "class_names": list(prior.class_names),
                 "metadata": metadata or {}}, f, indent=1)


def read_metadata(directory: str) -> dict:
  """The ``metadata`` a saved prior was written with (empty if none)."""
  path = os.path.join(directory, _PRIOR_FILE)
  with workdir.reading(path, _DAMAGED, also=(AttributeError,)):
    return workdir.load_json(path, _DAMAGED).get("metadata", {})


def load_prior(directory: str, dtype: DTypeLike = jnp.float32) -> Prior:
  """Loads a prior written by :func:`save_prior`.

  Args:
    directory: the saved prior.
    dtype: what the UNet computes in; its parameters and the contexts are
      cast to it (:func:`with_dtype`).

  Raises:
    ValueError: when ``directory`` is not a complete saved prior, or for a
      dtype that is not a compute dtype on this backend;
      :class:`pqd_jax.workdir.UnreadableFileError` names a file that is cut
      short or corrupt.
  """
  dtype = checks.compute_dtype(dtype, "dtype")
  meta_path = os.path.join(directory, _PRIOR_FILE)
  if not os.path.exists(meta_path):
    raise ValueError(f"{directory!r} is not a saved prior (no {_PRIOR_FILE}); "
                     "expected the output of pqd_jax.prior.save_prior.")
  with workdir.reading(meta_path, _DAMAGED, also=(TypeError,)):
    meta = workdir.load_json(meta_path, _DAMAGED)
    latent_shape = tuple(int(n) for n in meta["latent_shape"])
    class_names = tuple(meta["class_names"])
  # diffusers reports a cut config as an OSError naming it and a cut weights
  # file as msgpack's ValueError naming nothing: the folder is named.
  unet_dir = os.path.join(directory, "unet")
  with workdir.reading(unet_dir, _DAMAGED):
    unet, params = FlaxUNet2DConditionModel.from_pretrained(unet_dir)
  unet = diffusers_compat.hashable_module(unet)
  scheduler_dir = os.path.join(directory, "scheduler")
  with workdir.reading(scheduler_dir, _DAMAGED):
    scheduler, _ = FlaxDDIMScheduler.from_pretrained(  # (scheduler, state)
        scheduler_dir)
  ctx = workdir.read_npz(os.path.join(directory, _CONTEXT_FILE),
                         ("context", "null_context"), _DAMAGED)
  return with_dtype(
      Prior(unet=unet, params=params, scheduler=scheduler,
            context=jnp.asarray(ctx["context"]),
            null_context=jnp.asarray(ctx["null_context"]),
            latent_shape=latent_shape, class_names=class_names), dtype)
