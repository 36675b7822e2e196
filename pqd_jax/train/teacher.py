"""Training a teacher on a real training split with hard labels.

Batches are those of :func:`pqd_jax.data.pipeline.batch_dataset`, each a
pure function of the seed and the step, read ahead by grain workers
(:func:`pqd_jax.data.pipeline.prefetch_batches`) while the device trains;
the run goes through :func:`pqd_jax.train.loop.fit`, so it resumes from its
workdir.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from pqd_jax import checks, sharding
from pqd_jax.train import loop, start, steps

__all__ = ["PrefetchedSteps", "ShuffledSteps", "train_teacher"]


class ShuffledSteps:
  """Source indices of steps ``start`` to ``stop - 1`` of the teacher's run.

  ``steps[k]`` is the records of step ``start + k`` of
  :func:`pqd_jax.data.pipeline.batch_dataset` (the order of
  :func:`~pqd_jax.data.pipeline.record_dataset`: grain's index shuffle of
  the source's length, a fresh one every epoch), found without reading a
  record: a batch sequence for :func:`pqd_jax.data.pipeline.prefetch_batches`.
  """

  def __init__(self, n: int, batch_size: int, *, seed: int, start: int,
               stop: int):
    import grain

    self.order = grain.MapDataset.range(n).shuffle(seed=seed).repeat(None)
    self.batch_size, self.start, self.stop = batch_size, start, stop

  def __len__(self) -> int:
    return max(self.stop - self.start, 0)

  def __getitem__(self, k: int) -> np.ndarray:
    first = (self.start + k) * self.batch_size
    return np.asarray([self.order[j] for j in range(
        first, first + self.batch_size)], np.int64)


class PrefetchedSteps:
  """``batch_fn(step)`` for :func:`pqd_jax.train.loop.fit`, read ahead.

  Batch ``step`` holds the same values as
  ``pipeline.lazy_batch(pipeline.record_dataset(source, seed=seed), step,
  batch_size, ...)`` (``"image"`` rows converted when indexed, ``"label"``,
  ``"weight"`` ones), but :func:`pqd_jax.data.pipeline.prefetch_batches`
  decodes the next steps while the device computes. Asking for the step
  after the last one returns the batch read ahead; any other step (the
  first call, a resumed run) starts reading at that step. :meth:`close`
  stops the workers.

  Args:
    source: the image source.
    batch_size: records per step.
    num_steps: the steps to read up to (exclusive).
    seed: the order's seed.
    num_workers: decoding processes (0: a thread of this process).
    prefetch: batches read ahead per worker.
    mesh: the mesh the batches are split over (each process decodes only
      its devices' rows); default every device.

  Attributes:
    image_shape: ``[h, w, c]`` of the source's images.
  """

  def __init__(self, source: Any, batch_size: int, num_steps: int, *,
               seed: int = 0, num_workers: int = 0, prefetch: int = 2,
               mesh: jax.sharding.Mesh | None = None):
    from pqd_jax.data import pipeline  # data deps only on this path

    self._pipeline = pipeline
    self.source, self.num_steps, self.seed = source, num_steps, seed
    self.batch_size = checks.integer("batch_size", batch_size)
    self.num_workers = checks.integer("num_workers", num_workers, minimum=0)
    self.prefetch = checks.integer("prefetch", prefetch)
    if len(source) == 0:
      raise ValueError("the source is empty.")
    shards = sharding.num_data_shards(
        sharding.data_mesh() if mesh is None else mesh)
    # Every step has batch_size rows, padded to the shards by repeating the
    # last one (sharding.shard_batch): the same rows are this process's.
    rows = pipeline.process_rows(batch_size, -(-batch_size // shards) * shards,
                                 mesh, repeat_last=True)
    self._rows = None if rows is None else (lambda k: rows)
    self.image_shape = source[0][0].shape
    self._it, self._next = None, None

  def __call__(self, step: int) -> dict[str, Any]:
    """The batch of ``step``.

    Raises:
      IndexError: for a step >= num_steps.
    """
    if self._it is None or step != self._next:
      self.close()
      self._it = self._pipeline.prefetch_batches(
          self.source, ShuffledSteps(len(self.source), self.batch_size,
                                     seed=self.seed, start=step,
                                     stop=self.num_steps),
          num_workers=self.num_workers, prefetch=self.prefetch,
          rows=self._rows)
    batch = next(self._it, None)
    if batch is None:
      raise IndexError(f"step {step} is not below num_steps="
                       f"{self.num_steps}.")
    self._next = step + 1
    return {"image": self._pipeline.unit_rows([batch], self.source,
                                              self.image_shape),
            "label": batch.labels,
            "weight": np.ones(self.batch_size, np.float32)}

  def close(self) -> None:
    """Stops the read-ahead (and its workers); a later call starts again."""
    if self._it is not None:
      self._it.close()
    self._it = self._next = None


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
    num_workers: int = 0,
    prefetch: int = 2,
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
    num_workers: grain processes decoding the next batches while the
      device trains (0: a thread of this process); the batches are the
      same whatever the count.
    prefetch: batches read ahead per worker.

  Returns:
    The trained state.
  """
  steps.check_aug(aug)
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
  num_steps = start.steps_from_epochs(num_steps, num_epochs, len(source),
                                      batch_size)

  batch_fn = PrefetchedSteps(source, batch_size, num_steps, seed=seed,
                             num_workers=num_workers, prefetch=prefetch,
                             mesh=mesh)
  tx, state, step_key = start.initial_state(
      model, batch_fn.image_shape, num_steps=num_steps, optimizer=optimizer,
      learning_rate=learning_rate, weight_decay=weight_decay,
      warmup_steps=warmup_steps, seed=seed)

  step_fn = lambda s, b, k: steps.ce_step(s, b, k, model=model, tx=tx,
                                          aug=aug)
  try:
    return loop.fit(state, step_fn, batch_fn, num_steps, workdir,
                    rng=step_key, checkpoint_every=checkpoint_every,
                    eval_fn=eval_fn, eval_every=eval_every,
                    progress=progress, desc="teacher", mesh=mesh)
  finally:
    batch_fn.close()
