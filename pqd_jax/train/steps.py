"""Pure, jitted train and eval steps for classifiers (teacher and student).

``TrainState`` holds the step, parameters, batch statistics (empty for
instance norm) and optimizer state. A step is a pure function
``(state, batch, rng) -> (state, metrics)``: the same inputs give the same
outputs, the state buffers are donated, and the batch may be sharded over the
mesh's ``"data"`` axis (the loss is a global weighted mean, so 1 and N
devices give the same update up to float rounding).

Soft labels are online (the RDED way): the frozen teacher labels exactly the
augmented, CutMix-ed views the student sees, and the loss is the weighted KD
of :mod:`pqd_jax.train.losses` with the mixed weights ``λ·w_a + (1−λ)·w_b``.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from pqd_jax import sharding
from pqd_jax.data import formation
from pqd_jax.train import augment, losses

__all__ = [
    "TrainState",
    "aug_from_config",
    "augmented_views",
    "accuracy",
    "apply_gradients",
    "ce_step",
    "check_aug",
    "create_state",
    "kd_step",
    "label_log_probs",
    "make_optimizer",
    "predict",
    "variables_of",
]


class TrainState(struct.PyTreeNode):
  """Everything a training run carries from step to step."""

  step: jnp.ndarray
  params: Any
  batch_stats: Any
  opt_state: Any


def variables_of(state: TrainState) -> dict:
  """``{"params", "batch_stats"?}`` for ``model.apply`` (e.g. a teacher)."""
  variables = {"params": state.params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  return variables


def _kernels(params: Any) -> Any:
  """True for the parameters that weight decay applies to: rank >= 2."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


@functools.lru_cache(maxsize=64)
def make_optimizer(name: str, learning_rate: float, num_steps: int, *,
                   warmup_steps: int = 0, weight_decay: float = 0.0,
                   momentum: float = 0.9,
                   decay_norm_and_bias: bool = True
                   ) -> optax.GradientTransformation:
  """AdamW or SGD with linear warm-up and cosine decay to 0.

  The same settings return the same object: the optimizer is a static
  argument of the jitted steps, so a second run with equal settings (another
  seed) reuses the compiled step instead of compiling it again. With
  ``decay_norm_and_bias=False`` only the conv and dense kernels decay, not
  the norms' scales and biases nor the layers' biases (the parameters of
  rank < 2), as SRe2L's and D4M's students.

  Raises:
    ValueError: for an unknown optimizer or a non-positive step count.
  """
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
  warmup = max(warmup_steps, 1)
  schedule = optax.warmup_cosine_decay_schedule(
      0.0 if warmup_steps else learning_rate, learning_rate, warmup,
      max(num_steps, warmup + 1))
  mask = None if decay_norm_and_bias else _kernels
  if name == "adamw":
    return optax.adamw(schedule, weight_decay=weight_decay, mask=mask)
  if name == "sgd":
    return optax.chain(optax.add_decayed_weights(weight_decay, mask=mask),
                       optax.sgd(schedule, momentum=momentum))
  raise ValueError(f"Unknown optimizer {name!r}; expected 'adamw' or 'sgd'.")


def create_state(model: nn.Module, rng: jax.Array, image_shape: tuple,
                 tx: optax.GradientTransformation) -> TrainState:
  """Initialises parameters (and batch statistics) for ``[1, *image_shape]``."""
  variables = model.init(rng, jnp.zeros((1,) + tuple(image_shape)))
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}),
                    opt_state=tx.init(params))


def apply_gradients(state: TrainState, grads: Any,
                    tx: optax.GradientTransformation,
                    batch_stats: Any = None) -> TrainState:
  """The optimizer update: the next state (step + 1)."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  return state.replace(
      step=state.step + 1, params=optax.apply_updates(state.params, updates),
      batch_stats=state.batch_stats if batch_stats is None else batch_stats,
      opt_state=opt_state)


def _apply_train(model, batch_stats, params, images):
  variables = {"params": params}
  if batch_stats:
    variables["batch_stats"] = batch_stats
    logits, updated = model.apply(variables, images, train=True,
                                  mutable=["batch_stats"])
    return logits, updated["batch_stats"]
  return model.apply(variables, images, train=True), batch_stats


def _loss_and_grads(micro_loss, state: TrainState, inputs: Any,
                    accumulate: int):
  """The batch loss, batch statistics and gradient, in micro-batches.

  ``micro_loss(params, batch_stats, inputs) -> (loss, batch_stats)`` is a
  sum over the rows of ``inputs`` (normalised by the whole batch), so the
  micro-batches' gradients add up to the whole batch's: the update is the
  large batch's (BatchNorm aside, which normalises each micro-batch by its
  own statistics, as on a device holding only it). Micro-batch ``i`` takes
  rows ``i, i + a, i + 2a, …`` so that it is spread over the devices as
  the batch is.

  Args:
    micro_loss: the loss of a piece of the batch.
    state: the current state.
    inputs: a pytree of ``[b, ...]`` arrays.
    accumulate: micro-batches ``a`` (dividing ``b``); 1 is one pass.

  Returns:
    ``(loss, batch_stats, grads)``.
  """
  grad_fn = jax.value_and_grad(micro_loss, has_aux=True)
  if accumulate == 1:
    (loss, stats), grads = grad_fn(state.params, state.batch_stats, inputs)
    return loss, stats, grads
  micro = jax.tree.map(
      lambda a: jnp.moveaxis(a.reshape((-1, accumulate) + a.shape[1:]), 1, 0),
      inputs)

  def body(carry, piece):
    total, stats, grads = carry
    (loss, stats), g = grad_fn(state.params, stats, piece)
    return (total + loss, stats, jax.tree.map(jnp.add, grads, g)), None

  init = (jnp.zeros((), jnp.float32), state.batch_stats,
          jax.tree.map(jnp.zeros_like, state.params))
  (loss, stats, grads), _ = jax.lax.scan(body, init, micro)
  return loss, stats, grads


def _normaliser(weights: jnp.ndarray) -> jnp.ndarray:
  """``Σ w`` of the whole batch (1 if it is 0), as losses.weighted_mean."""
  total = jnp.sum(weights)
  return jnp.where(total > 0, total, 1.0)


AUG_KEYS = ("flip", "crop_scale", "cutmix", "dsa")


def check_aug(aug: Any) -> dict:
  """The augmentation settings as a dict; a listed setting is on.

  ``aug`` is a hashable tuple of ``(name, value)`` pairs (a jit static
  argument): ``("flip", bool)``, ``("crop_scale", (lo, hi) | None)`` for
  RandomResizedCrop, ``("cutmix", bool)`` and ``("dsa", bool | transforms)``
  for DSA (one transform per batch, :func:`pqd_jax.train.augment.dsa`).

  Raises:
    ValueError: for an unhashable ``aug``, an unknown setting or a bad crop
      scale.
  """
  try:
    hash(aug)
  except TypeError:
    raise ValueError(f"aug must be a hashable tuple of (name, value) pairs "
                     f"(a jit static argument), got {aug!r}.") from None
  settings = dict(aug)
  unknown = sorted(set(settings) - set(AUG_KEYS))
  if unknown:
    raise ValueError(f"Unknown augmentation settings {unknown}; expected "
                     f"names in {AUG_KEYS}.")
  scale = settings.get("crop_scale")
  if scale is not None and not (len(scale) == 2
                                and 0.0 < scale[0] <= scale[1] <= 1.0):
    raise ValueError(f"crop_scale must be (lo, hi) with 0 < lo <= hi <= 1, "
                     f"got {scale!r}.")
  return settings


def aug_from_config(config: Any) -> tuple:
  """The ``aug`` tuple of a teacher or student config section.

  ``flip`` always; ``crop_scale`` when non-empty; ``dsa`` and ``cutmix``
  when on (a section without ``cutmix``, the teacher's, has it off).
  """
  aug = [("flip", bool(config.flip))]
  if config.crop_scale:
    aug.append(("crop_scale", tuple(config.crop_scale)))
  if config.dsa:
    aug.append(("dsa", True))
  if config.get("cutmix", False):
    aug.append(("cutmix", True))
  return tuple(aug)


def augmented_views(rng: jax.Array, images: jnp.ndarray, weights: jnp.ndarray,
                    aug: dict) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Augmented views (flip, crop, DSA, then CutMix) and their mixed weights.

  The views a train step computes its loss on; an unlisted setting is off.

  Args:
    rng: key of the augmentations.
    images: ``[b, h, w, c]``.
    weights: ``[b]`` per-image weights.
    aug: the settings as :func:`check_aug` returns them.

  Returns:
    ``(views [b, h, w, c], weights [b])``: the weights are the inputs', or
    with CutMix the mixed ``λ·w_a + (1−λ)·w_b``.
  """
  k_flip, k_crop, k_dsa, k_mix = jax.random.split(rng, 4)
  x = augment.random_flip(k_flip, images) if aug.get("flip") else images
  if aug.get("crop_scale") is not None:
    x = augment.random_resized_crop(k_crop, x, scale=tuple(aug["crop_scale"]))
  if aug.get("dsa"):
    transforms = (augment.DSA_TRANSFORMS if aug["dsa"] is True
                  else tuple(aug["dsa"]))
    x = augment.dsa(k_dsa, x, transforms=transforms)
  if aug.get("cutmix"):
    x, _, _, weights = augment.cutmix(k_mix, x, weights)
  return x, weights


def _formed(batch: dict, factor: int) -> tuple[jnp.ndarray, jnp.ndarray,
                                              jnp.ndarray | None]:
  """``(images, weights, labels)`` a step trains on.

  With ``factor > 1`` the tiles of each stored image with their own
  weights (parameterised storage); otherwise the batch as it is.
  """
  labels = batch.get("label")
  if factor == 1:
    return batch["image"], batch["weight"], labels
  per = factor * factor
  return (formation.split(batch["image"], factor),
          batch["weight"].reshape(-1),
          None if labels is None else jnp.repeat(labels, per))


@functools.partial(jax.jit, static_argnames=("model", "teacher", "tx",
                                             "temperature", "aug",
                                             "accumulate", "factor"),
                   donate_argnums=(0,))
def kd_step(state: TrainState, batch: dict, rng: jax.Array, *,
            model: nn.Module, teacher: nn.Module, teacher_variables: Any,
            tx: optax.GradientTransformation, temperature: float,
            aug: Any, accumulate: int = 1,
            factor: int = 1) -> tuple[TrainState, dict]:
  """One step of weighted KD on online teacher labels of augmented views.

  Args:
    state: the student's state (donated).
    batch: ``{"image": [b, h, w, c], "weight": [b]}``.
    rng: key of this step's augmentations.
    model: the student.
    teacher: the frozen teacher module.
    teacher_variables: its variables.
    tx: the optimizer.
    temperature: KD temperature.
    aug: hashable augmentation settings (:func:`check_aug`; unlisted ones
      are off), e.g.
      ``(("flip", True), ("crop_scale", (0.5, 1.0)), ("cutmix", True))``.
    accumulate: micro-batches the batch is split into (gradient
      accumulation: the views, CutMix pairs included, are those of the
      whole batch, and so is the update; :func:`_loss_and_grads`).
    factor: parameterised storage (:mod:`pqd_jax.data.formation`): each
      stored image is a ``factor × factor`` mosaic whose tiles are trained
      on, upsampled, with ``batch["weight"]`` ``[b, factor²]`` their
      weights; 1: the images as they are.

  Returns:
    ``(new_state, {"loss": scalar})``.
  """
  aug = check_aug(aug)
  images, weights, _ = _formed(batch, factor)
  views, weights = augmented_views(rng, images, weights, aug)
  norm = _normaliser(weights)

  def micro_loss(params, batch_stats, piece):
    views, weights = piece
    teacher_logits = jax.lax.stop_gradient(
        teacher.apply(teacher_variables, views, train=False))
    logits, stats = _apply_train(model, batch_stats, params, views)
    per_sample = losses.kd_per_sample(logits, teacher_logits, temperature)
    return jnp.sum(weights * per_sample) / norm, stats

  loss, stats, grads = _loss_and_grads(micro_loss, state, (views, weights),
                                       accumulate)
  return apply_gradients(state, grads, tx, stats), {"loss": loss}


@functools.partial(jax.jit, static_argnames=("model", "tx", "aug",
                                             "accumulate", "factor"),
                   donate_argnums=(0,))
def ce_step(state: TrainState, batch: dict, rng: jax.Array, *,
            model: nn.Module, tx: optax.GradientTransformation,
            aug: Any, accumulate: int = 1,
            factor: int = 1) -> tuple[TrainState, dict]:
  """One step of weighted cross-entropy with hard labels.

  Args:
    state: the model's state (donated).
    batch: ``{"image", "label" [b] int32, "weight" [b]}``.
    rng: key of this step's augmentations.
    model: the classifier.
    tx: the optimizer.
    aug: hashable augmentation settings (:func:`check_aug`), e.g.
      ``(("dsa", True),)`` for the DSA protocol; CutMix is not used with
      hard labels.
    accumulate: micro-batches the batch is split into (as for
      :func:`kd_step`).
    factor: parameterised storage (as for :func:`kd_step`); the tiles of
      a mosaic share its label.

  Returns:
    ``(new_state, {"loss": scalar})``.
  """
  aug = dict(check_aug(aug), cutmix=False)
  images, weights, labels = _formed(batch, factor)
  views, weights = augmented_views(rng, images, weights, aug)
  norm = _normaliser(weights)

  def micro_loss(params, batch_stats, piece):
    views, labels, weights = piece
    logits, stats = _apply_train(model, batch_stats, params, views)
    per_sample = losses.ce_per_sample(logits, labels)
    return jnp.sum(weights * per_sample) / norm, stats

  loss, stats, grads = _loss_and_grads(
      micro_loss, state, (views, labels, weights), accumulate)
  return apply_gradients(state, grads, tx, stats), {"loss": loss}


@functools.partial(jax.jit, static_argnames=("model",))
def _predict(model, variables, images):
  return jnp.argmax(model.apply(variables, images, train=False), axis=-1)


def predict(model: nn.Module, variables: Any, images: Any,
            batch_size: int = 1000) -> np.ndarray:
  """Predicted classes ``[n]`` of ``images [n, h, w, c]`` (eval mode).

  Fixed-size batches (one compilation) sharded over every device.
  """
  mesh = sharding.data_mesh()
  variables = sharding.replicate(variables, mesh)
  fn = lambda x, start: _predict(model, variables, x)
  return sharding.map_batches(fn, (images,), batch_size, mesh,
                              dtypes=(np.float32,))


@functools.partial(jax.jit, static_argnames=("model",))
def _label_log_prob(model, variables, images, labels):
  logp = jax.nn.log_softmax(model.apply(variables, images, train=False))
  return jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


def label_log_probs(model: nn.Module, variables: Any, images: Any,
                    labels: Any, batch_size: int = 1000) -> np.ndarray:
  """``log p(label | image)`` ``[n]`` of a classifier (eval mode).

  How typical of its class the classifier finds each image (RDED's realism
  score is its negative, the cross-entropy). Batched as :func:`predict`.
  """
  mesh = sharding.data_mesh()
  variables = sharding.replicate(variables, mesh)
  fn = lambda x, y, start: _label_log_prob(model, variables, x, y)
  return sharding.map_batches(fn, (images, np.asarray(labels, np.int32)),
                              batch_size, mesh, dtypes=(np.float32, None))


def accuracy(model: nn.Module, state: TrainState, images: Any, labels: Any,
             batch_size: int = 1000) -> float:
  """Top-1 accuracy on ``images [n, h, w, c]`` (in the model's input range)."""
  pred = predict(model, variables_of(state), images, batch_size)
  return float(np.mean(pred == np.asarray(labels)))
