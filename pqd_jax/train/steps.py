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


@functools.lru_cache(maxsize=64)
def make_optimizer(name: str, learning_rate: float, num_steps: int, *,
                   warmup_steps: int = 0, weight_decay: float = 0.0,
                   momentum: float = 0.9) -> optax.GradientTransformation:
  """AdamW or SGD with linear warm-up and cosine decay to 0.

  The same settings return the same object: the optimizer is a static
  argument of the jitted steps, so a second run with equal settings (another
  seed) reuses the compiled step instead of compiling it again.

  Raises:
    ValueError: for an unknown optimizer or a non-positive step count.
  """
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
  warmup = max(warmup_steps, 1)
  schedule = optax.warmup_cosine_decay_schedule(
      0.0 if warmup_steps else learning_rate, learning_rate, warmup,
      max(num_steps, warmup + 1))
  if name == "adamw":
    return optax.adamw(schedule, weight_decay=weight_decay)
  if name == "sgd":
    return optax.chain(optax.add_decayed_weights(weight_decay),
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


def _apply_train(model, state, params, images):
  variables = {"params": params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
    logits, updated = model.apply(variables, images, train=True,
                                  mutable=["batch_stats"])
    return logits, updated["batch_stats"]
  return model.apply(variables, images, train=True), state.batch_stats


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


@functools.partial(jax.jit, static_argnames=("model", "teacher", "tx",
                                             "temperature", "aug"),
                   donate_argnums=(0,))
def kd_step(state: TrainState, batch: dict, rng: jax.Array, *,
            model: nn.Module, teacher: nn.Module, teacher_variables: Any,
            tx: optax.GradientTransformation, temperature: float,
            aug: Any) -> tuple[TrainState, dict]:
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

  Returns:
    ``(new_state, {"loss": scalar})``.
  """
  aug = check_aug(aug)
  views, weights = augmented_views(rng, batch["image"], batch["weight"], aug)
  teacher_logits = jax.lax.stop_gradient(
      teacher.apply(teacher_variables, views, train=False))

  def loss_fn(params):
    logits, stats = _apply_train(model, state, params, views)
    return losses.weighted_kd_loss(logits, teacher_logits, weights,
                                   temperature), stats

  (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  return apply_gradients(state, grads, tx, stats), {"loss": loss}


@functools.partial(jax.jit, static_argnames=("model", "tx", "aug"),
                   donate_argnums=(0,))
def ce_step(state: TrainState, batch: dict, rng: jax.Array, *,
            model: nn.Module, tx: optax.GradientTransformation,
            aug: Any) -> tuple[TrainState, dict]:
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

  Returns:
    ``(new_state, {"loss": scalar})``.
  """
  aug = dict(check_aug(aug), cutmix=False)
  views, weights = augmented_views(rng, batch["image"], batch["weight"], aug)

  def loss_fn(params):
    logits, stats = _apply_train(model, state, params, views)
    return losses.weighted_ce_loss(logits, batch["label"], weights), stats

  (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
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


def accuracy(model: nn.Module, state: TrainState, images: Any, labels: Any,
             batch_size: int = 1000) -> float:
  """Top-1 accuracy on ``images [n, h, w, c]`` (in the model's input range)."""
  pred = predict(model, variables_of(state), images, batch_size)
  return float(np.mean(pred == np.asarray(labels)))
