"""Trains the small class-conditional latent diffusion prior.

Denoising loss (ε- or v-prediction, uniform timesteps) on VAE latents with a
learned class embedding as a one-token context; the class is replaced by the
null class with probability ``cond_dropout`` for classifier-free guidance.
Parameters keep an EMA used for sampling. Training runs through
:func:`pqd_jax.train.trainer.fit`: orbax checkpoints, exact resume, metrics
and a progress bar with the loss; the finished prior is saved with
:func:`pqd_jax.prior.model.save_prior` to ``workdir/final``.
"""

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from pqd_jax import sharding
from pqd_jax import workdir as workdir_lib
from pqd_jax.prior import model as model_lib
from pqd_jax.train import trainer

__all__ = ["CONFIG_KEYS", "PriorState", "denoising_loss", "train_prior",
           "train_step"]


class PriorState(struct.PyTreeNode):
  """The training state: ``params = {"unet", "class_embedding"}``."""

  step: jnp.ndarray
  params: Any
  ema_params: Any
  opt_state: Any


def denoising_loss(params: Any, unet: Any, scheduler: Any, x0: jnp.ndarray,
                   labels: jnp.ndarray, rng: jax.Array, *, num_classes: int,
                   cond_dropout: float) -> jnp.ndarray:
  """Mean squared error of the UNet's ε (or v) prediction.

  Args:
    params: ``{"unet": ..., "class_embedding": [num_classes + 1, d]}``; the
      last row is the null class.
    unet: the ``FlaxUNet2DConditionModel``.
    scheduler: the ``FlaxDDIMScheduler`` (its prediction type sets the
      target).
    x0: ``[b, c, h, w]`` clean latents (NCHW).
    labels: ``[b]`` classes.
    rng: key of the timesteps, noise and condition dropout.
    num_classes: number of classes (the null class is ``num_classes``).
    cond_dropout: probability of replacing the class by the null class.

  Returns:
    The scalar loss.
  """
  state = scheduler.create_state()
  k_t, k_noise, k_drop = jax.random.split(rng, 3)
  b = x0.shape[0]
  t = jax.random.randint(k_t, (b,), 0, scheduler.config.num_train_timesteps)
  noise = jax.random.normal(k_noise, x0.shape)
  xt = scheduler.add_noise(state, x0, noise, t)
  drop = jax.random.bernoulli(k_drop, cond_dropout, (b,))
  cls = jnp.where(drop, num_classes, labels)
  context = params["class_embedding"][cls][:, None, :]
  pred = unet.apply({"params": params["unet"]}, xt, t, context).sample
  if scheduler.config.prediction_type == "v_prediction":
    target = scheduler.get_velocity(state, x0, noise, t)
  else:
    target = noise
  return jnp.mean(jnp.square(pred - target))


@functools.partial(jax.jit, static_argnames=(
    "unet", "scheduler", "tx", "num_classes", "cond_dropout", "ema_decay"),
                   donate_argnums=(0,))
def train_step(state: PriorState, batch: dict, rng: jax.Array, *, unet: Any,
               scheduler: Any, tx: optax.GradientTransformation,
               num_classes: int, cond_dropout: float, ema_decay: float
               ) -> tuple[PriorState, dict]:
  """One optimizer step on ``batch = {"latent": [b, c, h, w], "label"}``.

  The EMA decay warms up as ``min(ema_decay, (1 + s) / (10 + s))``.
  """
  loss, grads = jax.value_and_grad(denoising_loss)(
      state.params, unet, scheduler, batch["latent"], batch["label"], rng,
      num_classes=num_classes, cond_dropout=cond_dropout)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  step = state.step.astype(jnp.float32)
  decay = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
  ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p,
                     state.ema_params, params)
  return state.replace(step=state.step + 1, params=params, ema_params=ema,
                       opt_state=opt_state), {"loss": loss}


# The fields a checkpoint was trained with (resuming with others is refused).
CONFIG_KEYS = (
    "block_out_channels", "layers_per_block", "attention_head_dim",
    "cross_attention_dim", "attention", "num_train_timesteps", "beta_schedule",
    "prediction_type", "batch_size", "learning_rate", "warmup_steps",
    "weight_decay", "cond_dropout", "ema_decay")


def train_prior(latents: np.ndarray, labels: np.ndarray, workdir: str, *,
                config: Any, class_names: tuple[str, ...],
                seed: int = 0, checkpoint_every: int = 500,
                eval_fn: Callable[[model_lib.Prior], dict] | None = None,
                eval_every: int = 0, progress: bool = True
                ) -> model_lib.Prior:
  """Trains (or resumes, or loads) the class-conditional prior.

  Args:
    latents: ``[n, h, w, c]`` scaled latents (square): numpy, or
      :class:`pqd_jax.sharding.LazyRows` (``latents.load(..., lazy=True)``),
      of which each process reads only its devices' rows of each batch.
    labels: ``[n]`` classes in ``[0, len(class_names))``.
    workdir: checkpoints, ``metrics.jsonl``, ``config.json`` and the
      finished prior in ``final/`` (loaded as is when present).
    config: the UNet and scheduler fields of
      :func:`pqd_jax.prior.model.build_unet` and ``build_scheduler``, plus
      ``num_steps``, ``batch_size``, ``learning_rate``, ``warmup_steps``,
      ``weight_decay``, ``cond_dropout`` and ``ema_decay``.
    class_names: one name per class.
    seed: seed of the init, batches, timesteps and noise.
    checkpoint_every: steps between checkpoints.
    eval_fn: ``prior -> metrics`` evaluated on the EMA prior.
    eval_every: steps between evaluations (0: at the end only).
    progress: show a progress bar.

  Returns:
    The prior with the EMA parameters.

  Raises:
    ValueError: for bad latents or labels, a bad config, or a workdir
      trained with another config.
  """
  if not isinstance(latents, sharding.LazyRows):
    held = np.asarray(latents, np.float32)
    latents = sharding.LazyRows(lambda a, b: held[a:b], held.shape,
                                np.float32)
  z = latents
  y = np.asarray(labels)
  if z.ndim != 4 or z.shape[0] == 0:
    raise ValueError(f"latents must be a non-empty [n, h, w, c] array, got "
                     f"shape {z.shape}.")
  num_classes = len(class_names)
  if (y.shape != (z.shape[0],) or not np.issubdtype(y.dtype, np.integer)
      or y.min() < 0 or y.max() >= num_classes):
    raise ValueError(f"labels must be {z.shape[0]} integers in [0, "
                     f"{num_classes}), got shape {y.shape}, range "
                     f"[{y.min()}, {y.max()}].")
  if not 0.0 <= config.cond_dropout < 1.0:
    raise ValueError(f"cond_dropout must be in [0, 1), got "
                     f"{config.cond_dropout!r}.")
  latent_shape = tuple(int(s) for s in z.shape[1:])
  unet = model_lib.build_unet(config, latent_shape)
  scheduler = model_lib.build_scheduler(config)
  final = os.path.join(workdir, "final")
  cfg = dict(workdir_lib.config_values(config, CONFIG_KEYS),
             latent_shape=list(latent_shape), class_names=list(class_names),
             seed=seed)
  trainer.check_run_config(workdir, cfg, ignore=("num_steps",))
  if os.path.exists(os.path.join(final, "prior.json")):
    if model_lib.read_metadata(final).get("num_steps") == config.num_steps:
      return model_lib.load_prior(final)

  side = unet.config.sample_size
  h, w, c = latent_shape
  y_all = y.astype(np.int32)
  n = z.shape[0]
  batch_size = config.batch_size

  def to_unet(rows):  # [b, h, w, c] -> [b, c, side, side], zero-padded
    return np.pad(np.transpose(np.asarray(rows, np.float32), (0, 3, 1, 2)),
                  ((0, 0), (0, 0), (0, side - h), (0, side - w)))

  def batch_fn(step):
    # Lazy rows: each process reads only its devices' latents of the batch.
    idx = np.random.default_rng([seed, step]).choice(
        n, batch_size, replace=n < batch_size)
    return {"latent": sharding.LazyRows(
                lambda a, b: to_unet(z.take(idx[a:b])),
                (batch_size, c, side, side), np.float32),
            "label": y_all[idx]}

  init_key, embed_key, step_key = jax.random.split(jax.random.key(seed), 3)
  params = {"unet": unet.init_weights(init_key),
            "class_embedding": 0.02 * jax.random.normal(
                embed_key, (num_classes + 1, config.cross_attention_dim))}
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, max(config.warmup_steps, 1),
      max(config.num_steps, config.warmup_steps + 1),
      end_value=0.1 * config.learning_rate)
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.adamw(schedule, weight_decay=config.weight_decay))
  state = PriorState(step=jnp.zeros((), jnp.int32), params=params,
                     ema_params=jax.tree.map(jnp.copy, params),
                     opt_state=tx.init(params))

  def to_prior(ema_params):
    table = ema_params["class_embedding"]
    return model_lib.Prior(
        unet=unet, params=ema_params["unet"], scheduler=scheduler,
        context=table[:num_classes, None, :],
        null_context=table[num_classes][None, :],
        latent_shape=latent_shape, class_names=tuple(class_names))

  step_fn = lambda s, b, k: train_step(
      s, b, k, unet=unet, scheduler=scheduler, tx=tx,
      num_classes=num_classes, cond_dropout=float(config.cond_dropout),
      ema_decay=float(config.ema_decay))
  state = trainer.fit(
      state, step_fn, batch_fn, config.num_steps, workdir, rng=step_key,
      checkpoint_every=checkpoint_every,
      eval_fn=None if eval_fn is None else (
          lambda s: eval_fn(to_prior(s.ema_params))),
      eval_every=eval_every, progress=progress, desc="prior")
  prior = to_prior(state.ema_params)
  model_lib.save_prior(prior, final, metadata={"num_steps": config.num_steps})
  return prior

