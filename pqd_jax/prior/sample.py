"""SDEdit / img2img through the prior: push centroids onto the data manifold.

Each centroid is noised to ``t = strength · T`` with the scheduler's
``add_noise`` and denoised with DDIM (η = 0) — or PNDM, Stable Diffusion's
default sampler that D4M uses (:func:`with_scheduler`) — and
classifier-free guidance towards its class. ``strength = 0`` returns the
centroid unchanged (the "decode only" ablation); ``strength = 1`` starts
from pure noise, i.e. plain class-conditional sampling. The noise of
sample ``i`` is drawn from ``fold_in(rng, i)``, so the outputs do not
depend on the batch size or the number of devices; batches are sharded
over the mesh's ``"data"`` axis. The UNet may compute in bfloat16
(:func:`pqd_jax.prior.with_dtype`); the guidance and the sampler's updates
run in float32, the latents' dtype.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from pqd_jax import checks, sharding
from pqd_jax.prior.model import Prior, padded_side

__all__ = ["SCHEDULERS", "guided_prediction", "img2img",
           "num_denoising_steps", "with_scheduler"]

SCHEDULERS = ("ddim", "pndm")


def with_scheduler(prior: Prior, name: str) -> Prior:
  """The prior sampling with ``name``: ``"ddim"`` or ``"pndm"``.

  Both take the noise schedule and prediction type of the prior's own
  scheduler. ``"pndm"`` is Stable Diffusion's default (PLMS with the
  Runge-Kutta warm-up skipped, ``skip_prk_steps``), what D4M samples with;
  ``"ddim"`` (η = 0) is deterministic given the starting noise.

  Raises:
    ValueError: for another name.
  """
  checks.choice("scheduler", name, SCHEDULERS)
  from diffusers import FlaxDDIMScheduler, FlaxPNDMScheduler

  config = dict(prior.scheduler.config)
  if name == "pndm":
    scheduler = FlaxPNDMScheduler.from_config(config, skip_prk_steps=True)
  else:
    scheduler = FlaxDDIMScheduler.from_config(config)
  if type(scheduler) is type(prior.scheduler):
    return prior
  return prior._replace(scheduler=scheduler)


def guided_prediction(unet: Any, params: Any, x: jnp.ndarray, t: jnp.ndarray,
                      context: jnp.ndarray, null_context: jnp.ndarray,
                      guidance_scale: float | jnp.ndarray) -> jnp.ndarray:
  """The classifier-free guided UNet output ``u + g · (c − u)``.

  Args:
    unet: the ``FlaxUNet2DConditionModel``.
    params: its parameters.
    x: ``[b, c, h, w]`` noisy latents (NCHW, the UNet's layout).
    t: ``[b]`` or scalar timestep.
    context: ``[b, l, d]`` conditioning.
    null_context: ``[l, d]`` unconditional conditioning.
    guidance_scale: ``g``; 1 gives the conditional prediction.

  Returns:
    ``[b, c, h, w]`` in ``x``'s dtype, whatever the UNet computes in. The
    conditional and unconditional branches run as one batch of ``2b``.
  """
  b = x.shape[0]
  t = jnp.broadcast_to(jnp.asarray(t), (b,))
  null = jnp.broadcast_to(null_context, (b,) + null_context.shape)
  out = unet.apply({"params": params}, jnp.concatenate([x, x]),
                   jnp.concatenate([t, t]),
                   jnp.concatenate([null, context])).sample
  # A bfloat16 UNet's output: the difference g scales is taken in x's dtype.
  out = out.astype(x.dtype)
  uncond, cond = out[:b], out[b:]
  return uncond + guidance_scale * (cond - uncond)


def num_denoising_steps(strength: float, num_steps: int) -> int:
  """How many of ``num_steps`` DDIM steps img2img runs at ``strength``."""
  return min(int(num_steps * strength), num_steps)


@functools.partial(jax.jit, static_argnames=(
    "unet", "scheduler", "num_steps", "start", "pure_noise", "use_cfg"))
def _denoise(unet, scheduler, params, x0, context, null_context, keys,
             guidance_scale, *, num_steps, start, pure_noise, use_cfg):
  """``x0 [b, c, h, w]`` → img2img output, from timestep index ``start``."""
  state = scheduler.set_timesteps(scheduler.create_state(), num_steps,
                                  x0.shape)
  noise = jax.vmap(lambda k: jax.random.normal(k, x0.shape[1:]))(keys)
  timesteps = state.timesteps
  if pure_noise:
    x = noise * state.init_noise_sigma
  else:
    t0 = jnp.full((x0.shape[0],), timesteps[start])
    x = scheduler.add_noise(state, x0, noise, t0)

  def body(i, carry):
    x, state = carry  # PNDM's state keeps its past predictions
    t = timesteps[i]
    if use_cfg:
      out = guided_prediction(unet, params, x, t, context, null_context,
                              guidance_scale)
    else:
      out = unet.apply({"params": params}, x,
                       jnp.broadcast_to(t, (x.shape[0],)),
                       context).sample.astype(x.dtype)
    step = scheduler.step(state, out, t, x)
    return step.prev_sample, step.state

  return jax.lax.fori_loop(start, num_steps, body, (x, state))[0]


def _check(prior: Prior, latents: Any, classes: Any, strength: float,
           guidance_scale: float, num_steps: int
           ) -> tuple[np.ndarray, np.ndarray]:
  z = np.asarray(latents)
  channels = prior.latent_shape[-1]
  if z.ndim != 4 or z.shape[-1] != channels:
    raise ValueError(f"latents must have shape [b, h, w, {channels}] (NHWC, "
                     f"the prior's {channels} channels), got {z.shape}.")
  if z.shape[0] == 0:
    raise ValueError("latents is empty: nothing to denoise.")
  y = np.asarray(classes)
  if y.shape != (z.shape[0],) or not np.issubdtype(y.dtype, np.integer):
    raise ValueError(f"classes must be {z.shape[0]} integers (one per "
                     f"latent), got shape {y.shape} dtype {y.dtype}.")
  bad = y[(y < 0) | (y >= prior.num_classes)]
  if bad.size:
    raise ValueError(f"classes must be in [0, {prior.num_classes}), got "
                     f"{sorted(set(bad.tolist()))[:5]}.")
  if not 0.0 <= strength <= 1.0:
    raise ValueError(f"strength must be in [0, 1], got {strength!r}.")
  if not np.isfinite(guidance_scale) or guidance_scale < 0:
    raise ValueError(f"guidance_scale must be a finite number >= 0, got "
                     f"{guidance_scale!r}.")
  if int(num_steps) != num_steps or num_steps < 1:
    raise ValueError(f"num_steps must be a positive integer, got "
                     f"{num_steps!r}.")
  return z, y.astype(np.int32)


def img2img(prior: Prior, latents: Any, classes: Any, *, strength: float,
            guidance_scale: float, num_steps: int, rng: jax.Array,
            batch_size: int = 256, mesh: Mesh | None = None,
            first_index: int = 0) -> np.ndarray:
  """Noises each latent to ``strength`` and denoises it towards its class.

  Args:
    prior: the diffusion prior.
    latents: ``[b, h, w, c]`` scaled latents (e.g. class centroids); any
      side, whatever the UNet's ``sample_size``.
    classes: ``[b]`` class of each latent.
    strength: in ``[0, 1]``: the fraction of the DDIM schedule that is
      re-run (0: the latents unchanged; 1: pure noise, class-conditional
      sampling).
    guidance_scale: classifier-free guidance scale (1: conditional only).
    num_steps: DDIM steps of the whole schedule (``strength · num_steps``
      run).
    rng: key; latent ``i`` uses ``fold_in(rng, first_index + i)``.
    batch_size: latents per compiled call (rounded to the devices).
    mesh: batches are sharded over its ``"data"`` axis (default: every
      device).
    first_index: the set index of ``latents[0]``: a set sampled in parts
      (a class group at a time) draws the same noise as in one call.

  Returns:
    ``[b, h, w, c]`` float32 latents.

  Raises:
    ValueError: for latents of the wrong shape, classes out of range, a
      strength outside [0, 1], a negative guidance scale or no steps.
  """
  z, y = _check(prior, latents, classes, strength, guidance_scale, num_steps)
  steps = num_denoising_steps(strength, num_steps)
  if steps == 0:
    return z.astype(np.float32)
  # The UNet is convolutional: any side works once padded to what its
  # blocks can halve (7x7 Fashion-MNIST latents run as 8x8; SD's 64x64 as
  # they are, and so would the 32x32 latents of 256 px images).
  h, w = z.shape[1:3]
  blocks = len(prior.unet.config.block_out_channels)
  mesh = sharding.data_mesh() if mesh is None else mesh
  params, context, null_context, rng = sharding.replicate(
      (prior.params, np.asarray(prior.context), np.asarray(prior.null_context),
       rng), mesh)
  use_cfg = guidance_scale != 1.0

  def fn(zb, yb, ib, start):
    del start
    x0 = jnp.pad(jnp.transpose(zb, (0, 3, 1, 2)),
                 ((0, 0), (0, 0), (0, padded_side(h, blocks) - h),
                  (0, padded_side(w, blocks) - w)))
    keys = jax.vmap(jax.random.fold_in, (None, 0))(rng, ib)
    out = _denoise(prior.unet, prior.scheduler, params, x0,
                   context[yb], null_context, keys,
                   jnp.float32(guidance_scale), num_steps=num_steps,
                   start=num_steps - steps, pure_noise=strength == 1.0,
                   use_cfg=use_cfg)
    return jnp.transpose(out[:, :, :h, :w], (0, 2, 3, 1))

  first_index = checks.integer("first_index", first_index, minimum=0)
  index = first_index + np.arange(z.shape[0], dtype=np.int32)
  return sharding.map_batches(fn, (z, y, index), batch_size, mesh,
                              dtypes=(np.float32, None, None))
