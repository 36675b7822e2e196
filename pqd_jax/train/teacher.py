"""Training a teacher on a real training split with hard labels.

Batches come from :func:`pqd_jax.data.pipeline.lazy_batch`, each a pure
function of the seed and the step, and the run goes through
:func:`pqd_jax.train.loop.fit`, so it resumes from its workdir.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

from pqd_jax.train import loop, start, steps

__all__ = ["train_teacher"]


def train_teacher(
    model: nn.Module,
    source: Any,
    workdir: str,
    *,
    num_steps: int | None = None,
    num_epochs: int | None = None,
    batch_size: int = 128,
    optimizer: str = "adamw",
    learning_rate: float = 2e-3,
    weight_decay: float = 1e-4,
    warmup_steps: int = 200,
    aug: Any = (("flip", True), ("crop_scale", (0.6, 1.0))),
    seed: int = 0,
    checkpoint_every: int = 500,
    eval_fn: Callable[[steps.TrainState], dict] | None = None,
    eval_every: int = 0,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
) -> steps.TrainState:
  """Trains (or resumes) a teacher on a real training split, hard labels.

  Args:
    model: the classifier.
    source: an :class:`~pqd_jax.data.sources.ImageSource`; batches come from
      :func:`pqd_jax.data.pipeline.batch_dataset` (images in ``[-1, 1]``),
      batch ``s`` a pure function of ``seed`` and ``s``.
    workdir: checkpoints and metrics (resumable).
    num_steps: training steps (or give ``num_epochs``).
    num_epochs: passes over the split, ``ceil(n / batch)`` steps each.
    batch_size: images per step.
    optimizer: ``"adamw"`` or ``"sgd"``.
    learning_rate: peak learning rate.
    weight_decay: weight decay.
    warmup_steps: warm-up steps.
    aug: augmentation settings (:func:`pqd_jax.train.steps.check_aug`; no
      CutMix with hard labels).
    seed: seed of the init, order and augmentations.
    checkpoint_every: steps between checkpoints.
    eval_fn: ``state -> metrics`` (e.g. test accuracy).
    eval_every: steps between evaluations (0: at the end only).
    progress: show a progress bar.
    mesh: the ``"data"`` mesh the batches are split over; default every
      device of every process.

  Returns:
    The trained state.
  """
  from pqd_jax.data import pipeline  # data deps only on this path

  steps.check_aug(aug)
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  num_steps = start.steps_from_epochs(num_steps, num_epochs, len(source),
                                      batch_size)

  records = pipeline.record_dataset(source, seed=seed)
  image, _ = source[0]
  tx, state, step_key = start.initial_state(
      model, image.shape, num_steps=num_steps, optimizer=optimizer,
      learning_rate=learning_rate, weight_decay=weight_decay,
      warmup_steps=warmup_steps, seed=seed)

  def batch_fn(step):  # each process reads only its devices' records
    return pipeline.lazy_batch(records, step, batch_size, image.shape)

  step_fn = lambda s, b, k: steps.ce_step(s, b, k, model=model, tx=tx,
                                          aug=aug)
  return loop.fit(state, step_fn, batch_fn, num_steps, workdir, rng=step_key,
                  checkpoint_every=checkpoint_every, eval_fn=eval_fn,
                  eval_every=eval_every, progress=progress, desc="teacher",
                  mesh=mesh)
