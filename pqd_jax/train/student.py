"""Training a student from scratch on a weighted distilled set.

With a teacher the labels are online soft labels (KD on the teacher's logits
of every augmented view); without, hard-label weighted cross-entropy. Runs
through :func:`pqd_jax.train.loop.fit`, so they resume from their workdir.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from pqd_jax import checks, sharding
from pqd_jax.train import loop, losses, start, steps

__all__ = ["distilled_batches", "train_student"]


def distilled_batches(images: np.ndarray | sharding.LazyRows,
                      labels: np.ndarray, weights: np.ndarray,
                      batch_size: int, seed: int,
                      fill: bool = False) -> Callable[[int], dict]:
  """Batches of a distilled set, a pure function of seed and step.

  Every step draws ``min(batch_size, n)`` distinct images afresh; with
  ``fill``, a batch larger than the set holds every image
  ``batch_size // n`` times (each copy augmented on its own by the step)
  and ``batch_size % n`` distinct others, in a random order. A set on disk
  (:class:`pqd_jax.sharding.LazyRows`) is read a batch at a time.
  """
  n = images.shape[0]
  size = batch_size if fill else min(batch_size, n)
  take = (images.take if isinstance(images, sharding.LazyRows)
          else lambda idx: images[idx])

  def batch(step: int) -> dict:
    gen = np.random.default_rng([seed, step])
    if size <= n:
      idx = gen.choice(n, size, replace=False)
    else:
      whole, rest = divmod(size, n)
      idx = gen.permutation(np.concatenate(
          [np.tile(np.arange(n), whole), gen.choice(n, rest, replace=False)]))
    return {"image": np.asarray(take(idx), np.float32),
            "label": np.asarray(labels[idx], np.int32),
            "weight": np.asarray(weights[idx], np.float32)}

  return batch


def train_student(
    model: nn.Module,
    images: np.ndarray | sharding.LazyRows,
    labels: np.ndarray,
    weights: np.ndarray,
    workdir: str,
    *,
    num_classes: int,
    teacher: nn.Module | None = None,
    teacher_variables: Any = None,
    temperature: float = 4.0,
    aug: Any = (("flip", True), ("crop_scale", (0.5, 1.0)),
                ("cutmix", True)),
    seed: int = 0,
    batch_size: int = 100,
    num_steps: int | None = None,
    num_epochs: int | None = None,
    optimizer: str = "adamw",
    learning_rate: float = 1e-3,
    weight_decay: float = 0.01,
    decay_norm_and_bias: bool = True,
    warmup_steps: int = 0,
    grad_accumulation: int = 1,
    factor: int = 1,
    fill_batch: bool = False,
    eval_fn: Callable[[steps.TrainState], dict] | None = None,
    eval_every: int = 0,
    checkpoint_every: int = 500,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
) -> steps.TrainState:
  """Trains a student from scratch on a weighted distilled set.

  With a ``teacher``: online soft labels (KD at ``temperature`` on the
  teacher's logits of every augmented view). Without: hard-label weighted
  cross-entropy.

  Args:
    model: the student module.
    images: ``[n, h, w, c]`` float images in the model's input range, in
      memory or read a batch at a time
      (:func:`pqd_jax.data.synthetic.load_set`).
    labels: ``[n]`` int labels.
    weights: ``[n]`` non-negative per-image weights (ones = D4M).
    workdir: checkpoints and metrics (resumable).
    num_classes: number of classes.
    teacher: frozen teacher module (None: hard labels).
    teacher_variables: its variables.
    temperature: KD temperature.
    aug: augmentation settings (:func:`pqd_jax.train.steps.check_aug`);
      for the hard-label protocol of the published tables use
      ``(("dsa", True),)``.
    seed: seed of the init, the batches and the augmentations.
    batch_size: images per step (capped at n unless ``fill_batch``).
    num_steps: training steps (or give ``num_epochs``).
    num_epochs: passes over the set, ``ceil(n / batch)`` steps each.
    optimizer: ``"adamw"`` or ``"sgd"``.
    learning_rate: peak learning rate.
    weight_decay: weight decay.
    decay_norm_and_bias: whether weight decay also applies to the norms'
      scales and the biases (False: kernels only, as SRe2L).
    warmup_steps: linear warm-up steps before the cosine decay.
    grad_accumulation: micro-batches each step's batch is split into, so
      that a batch a device cannot hold (SRe2L's 1024) takes several passes
      for one update equal to the whole batch's (BatchNorm aside); must
      divide the batch on each device.
    factor: parameterised storage (:mod:`pqd_jax.data.formation`): each
      stored image is a ``factor × factor`` mosaic of tiles trained on
      upsampled, ``weights`` ``[n, factor²]`` the tiles'; a step takes
      ``batch_size`` stored images (``batch_size · factor²`` tiles).
    fill_batch: a ``batch_size`` above the set's size is kept: each step
      holds several augmented views of every image (equal compute per step
      at any IPC) instead of the whole set once.
    eval_fn: optional ``state -> metrics`` (e.g. test accuracy).
    eval_every: steps between evaluations (0: at the end only); the rows of
      ``workdir/metrics.jsonl`` give the accuracy-versus-steps curve.
    checkpoint_every: steps between checkpoints.
    progress: show a progress bar.
    mesh: the ``"data"`` mesh the batches are split over; default every
      device of every process.

  Returns:
    The trained state.

  Raises:
    ValueError: for an empty set, bad labels or bad weights, a batch size
      < 1, a negative seed, or not exactly one of ``num_steps`` and
      ``num_epochs``.
  """
  losses.check_distilled_set(images, labels, weights, num_classes, factor)
  steps.check_aug(aug)
  batch_size = checks.integer("batch_size", batch_size)
  grad_accumulation = checks.integer("grad_accumulation", grad_accumulation)
  seed = checks.integer("seed", seed, minimum=0)
  num_steps = start.steps_from_epochs(num_steps, num_epochs, len(images),
                                      batch_size)
  if teacher is not None and teacher_variables is None:
    raise ValueError("teacher_variables are required with a teacher.")
  tx, state, step_key = start.initial_state(
      model, images.shape[1:], num_steps=num_steps, optimizer=optimizer,
      learning_rate=learning_rate, weight_decay=weight_decay,
      warmup_steps=warmup_steps, seed=seed,
      decay_norm_and_bias=decay_norm_and_bias)
  mesh = sharding.data_mesh() if mesh is None else mesh
  # The tiles of a step's stored images, on each device.
  batch = batch_size if fill_batch else min(batch_size, len(images))
  local = batch * factor * factor // sharding.num_data_shards(mesh)
  if local % grad_accumulation:
    raise ValueError(
        f"grad_accumulation={grad_accumulation} does not divide the "
        f"{local} training images a step puts on each device (batch "
        f"{batch} over "
        f"{sharding.num_data_shards(mesh)} devices).")
  if teacher is not None:
    teacher_variables = sharding.replicate(teacher_variables, mesh)
    step_fn = lambda s, b, k: steps.kd_step(
        s, b, k, model=model, teacher=teacher,
        teacher_variables=teacher_variables, tx=tx, temperature=temperature,
        aug=aug, accumulate=grad_accumulation, factor=factor)
  else:
    step_fn = lambda s, b, k: steps.ce_step(s, b, k, model=model, tx=tx,
                                            aug=aug,
                                            accumulate=grad_accumulation,
                                            factor=factor)
  return loop.fit(state, step_fn,
                  distilled_batches(images, labels, weights, batch_size, seed,
                                    fill_batch),
                  num_steps, workdir, rng=step_key,
                  checkpoint_every=checkpoint_every, eval_fn=eval_fn,
                  eval_every=eval_every, progress=progress, desc="student",
                  mesh=mesh)
