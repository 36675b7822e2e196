"""Training loops with orbax checkpoints: a generic ``fit``, the student.

``fit`` runs ``state, metrics = step_fn(state, batch_fn(step), key(step))``
from the state's step to ``num_steps``. Batches and keys are pure functions
of the step, so a run killed at any point and started again with the same
workdir resumes from its last checkpoint and ends with the same parameters
as an uninterrupted run. Metrics go to ``workdir/metrics.jsonl``.

The state is replicated and every batch split over the mesh's ``"data"``
axis (default: every device of every process), so the same loop runs on one
CPU, on several devices, or on every process of a multi-process run (all
processes call it; orbax writes the checkpoints together, process 0 the
metrics). Batches whose size is not a multiple of the devices are padded with
weight-0 rows (:func:`pqd_jax.sharding.pad_to_shards`).
"""

import json
import os
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from tqdm import tqdm

from pqd_jax import checks, distributed, io, sharding
from pqd_jax.train import losses, steps

# Re-exported: the trainer is where users look for it.
variables_of = steps.variables_of

__all__ = [
    "check_run_config",
    "distilled_batches",
    "fit",
    "mean_std",
    "random_subset",
    "restore_variables",
    "steps_from_epochs",
    "train_student",
    "train_teacher",
    "variables_of",
]


def fit(
    state: steps.TrainState,
    step_fn: Callable[[steps.TrainState, dict, jax.Array], tuple[Any, dict]],
    batch_fn: Callable[[int], dict],
    num_steps: int,
    workdir: str,
    *,
    rng: jax.Array,
    checkpoint_every: int = 500,
    log_every: int = 50,
    eval_fn: Callable[[steps.TrainState], dict] | None = None,
    eval_every: int = 0,
    progress: bool = True,
    desc: str = "train",
    mesh: jax.sharding.Mesh | None = None,
) -> steps.TrainState:
  """Runs (or resumes) a training loop with checkpoints.

  Args:
    state: the initial state (ignored when a checkpoint exists).
    step_fn: ``(state, batch, key) -> (state, metrics)``.
    batch_fn: the batch of a step (must depend only on the step).
    num_steps: total steps.
    workdir: checkpoints under ``workdir/ckpt``, ``metrics.jsonl`` beside.
    rng: base key; step ``s`` uses ``fold_in(rng, s)``.
    checkpoint_every: steps between checkpoints (and one at the end).
    log_every: steps between metric rows.
    eval_fn: ``state -> dict`` of evaluation metrics.
    eval_every: steps between evaluations (0: only at the end).
    progress: show a tqdm bar.
    desc: the bar's label.
    mesh: the ``"data"`` mesh; default every device.

  Returns:
    The final state.
  """
  mesh = sharding.data_mesh() if mesh is None else mesh
  state = sharding.replicate(state, mesh)
  coordinator = distributed.is_coordinator()
  os.makedirs(workdir, exist_ok=True)
  manager = ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, "ckpt")),
      options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
  if manager.latest_step() is not None:
    state = manager.restore(manager.latest_step(),
                            args=ocp.args.StandardRestore(state))
  start = int(state.step)
  metrics_path = os.path.join(workdir, "metrics.jsonl")

  def log(row):
    if coordinator:
      with open(metrics_path, "a") as f:
        f.write(json.dumps(row) + "\n")

  t0 = time.perf_counter()
  bar = tqdm(range(start, num_steps), initial=start, total=num_steps,
             desc=desc, disable=not (progress and coordinator))
  for step in bar:
    state, metrics = step_fn(state,
                             sharding.shard_batch(batch_fn(step), mesh),
                             jax.random.fold_in(rng, step))
    done = step + 1
    evaluate = eval_fn is not None and (
        (eval_every and done % eval_every == 0) or done == num_steps)
    if evaluate or done % log_every == 0 or done == num_steps:
      row = {"step": done, "seconds": time.perf_counter() - t0,
             **{k: float(v) for k, v in metrics.items()}}
      if evaluate:
        row.update(eval_fn(state))
      bar.set_postfix(loss=f"{row['loss']:.4f}")
      log(row)
    if done % checkpoint_every == 0 or done == num_steps:
      manager.save(done, args=ocp.args.StandardSave(state))
  manager.wait_until_finished()
  return state


def distilled_batches(images: np.ndarray, labels: np.ndarray,
                      weights: np.ndarray, batch_size: int,
                      seed: int) -> Callable[[int], dict]:
  """Batches of a small distilled set, a pure function of seed and step.

  Every step draws ``min(batch_size, n)`` distinct images afresh.
  """
  n = images.shape[0]
  size = min(batch_size, n)

  def batch(step: int) -> dict:
    idx = np.random.default_rng([seed, step]).choice(n, size, replace=False)
    return {"image": np.asarray(images[idx], np.float32),
            "label": np.asarray(labels[idx], np.int32),
            "weight": np.asarray(weights[idx], np.float32)}

  return batch


def train_student(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    workdir: str,
    *,
    num_classes: int,
    num_steps: int | None = None,
    num_epochs: int | None = None,
    batch_size: int = 100,
    optimizer: str = "adamw",
    learning_rate: float = 1e-3,
    weight_decay: float = 0.01,
    warmup_steps: int = 0,
    teacher: nn.Module | None = None,
    teacher_variables: Any = None,
    temperature: float = 4.0,
    aug: Any = (("flip", True), ("crop_scale", (0.5, 1.0)),
                ("cutmix", True)),
    seed: int = 0,
    checkpoint_every: int = 500,
    eval_fn: Callable[[steps.TrainState], dict] | None = None,
    eval_every: int = 0,
    progress: bool = True,
    mesh: jax.sharding.Mesh | None = None,
) -> steps.TrainState:
  """Trains a student from scratch on a weighted distilled set.

  With a ``teacher``: online soft labels (KD at ``temperature`` on the
  teacher's logits of every augmented view). Without: hard-label weighted
  cross-entropy.

  Args:
    model: the student module.
    images: ``[n, h, w, c]`` float images in the model's input range.
    labels: ``[n]`` int labels.
    weights: ``[n]`` non-negative per-image weights (ones = D4M).
    workdir: checkpoints and metrics (resumable).
    num_classes: number of classes.
    num_steps: training steps (or give ``num_epochs``).
    num_epochs: passes over the set, ``ceil(n / batch)`` steps each.
    batch_size: images per step (capped at n).
    optimizer: ``"adamw"`` or ``"sgd"``.
    learning_rate: peak learning rate.
    weight_decay: weight decay.
    warmup_steps: linear warm-up steps before the cosine decay.
    teacher: frozen teacher module (None: hard labels).
    teacher_variables: its variables.
    temperature: KD temperature.
    aug: augmentation settings (:func:`pqd_jax.train.steps.check_aug`);
      for the hard-label protocol of the published tables use
      ``(("dsa", True),)``.
    seed: seed of the init, the batches and the augmentations.
    checkpoint_every: steps between checkpoints.
    eval_fn: optional ``state -> metrics`` (e.g. test accuracy).
    eval_every: steps between evaluations (0: at the end only); the rows of
      ``workdir/metrics.jsonl`` give the accuracy-versus-steps curve.
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
  losses.check_distilled_set(images, labels, weights, num_classes)
  steps.check_aug(aug)
  batch_size = checks.integer("batch_size", batch_size)
  seed = checks.integer("seed", seed, minimum=0)
  num_steps = steps_from_epochs(num_steps, num_epochs, len(images),
                                batch_size)
  if teacher is not None and teacher_variables is None:
    raise ValueError("teacher_variables are required with a teacher.")
  tx = steps.make_optimizer(optimizer, learning_rate, num_steps,
                            warmup_steps=warmup_steps,
                            weight_decay=weight_decay)
  init_key, step_key = jax.random.split(jax.random.key(seed))
  state = steps.create_state(model, init_key, images.shape[1:], tx)
  mesh = sharding.data_mesh() if mesh is None else mesh
  if teacher is not None:
    teacher_variables = sharding.replicate(teacher_variables, mesh)
    step_fn = lambda s, b, k: steps.kd_step(
        s, b, k, model=model, teacher=teacher,
        teacher_variables=teacher_variables, tx=tx, temperature=temperature,
        aug=aug)
  else:
    step_fn = lambda s, b, k: steps.ce_step(s, b, k, model=model, tx=tx,
                                            aug=aug)
  return fit(state, step_fn,
             distilled_batches(images, labels, weights, batch_size, seed),
             num_steps, workdir, rng=step_key,
             checkpoint_every=checkpoint_every, eval_fn=eval_fn,
             eval_every=eval_every, progress=progress, desc="student",
             mesh=mesh)



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
  num_steps = steps_from_epochs(num_steps, num_epochs, len(source),
                                batch_size)

  records = pipeline.record_dataset(source, seed=seed)
  tx = steps.make_optimizer(optimizer, learning_rate, num_steps,
                            warmup_steps=warmup_steps,
                            weight_decay=weight_decay)
  image, _ = source[0]
  init_key, step_key = jax.random.split(jax.random.key(seed))
  state = steps.create_state(model, init_key, image.shape, tx)

  def batch_fn(step):  # each process reads only its devices' records
    return pipeline.lazy_batch(records, step, batch_size, image.shape)

  step_fn = lambda s, b, k: steps.ce_step(s, b, k, model=model, tx=tx,
                                          aug=aug)
  return fit(state, step_fn, batch_fn, num_steps, workdir, rng=step_key,
             checkpoint_every=checkpoint_every, eval_fn=eval_fn,
             eval_every=eval_every, progress=progress, desc="teacher",
             mesh=mesh)


def steps_from_epochs(num_steps: int | None, num_epochs: int | None,
                      num_examples: int, batch_size: int) -> int:
  """The step count given as steps or as epochs of ``ceil(n / batch)``.

  Raises:
    ValueError: unless exactly one of them is a positive integer.
  """
  if (num_steps is None) == (num_epochs is None):
    raise ValueError(f"Give exactly one of num_steps and num_epochs, got "
                     f"num_steps={num_steps!r}, num_epochs={num_epochs!r}.")
  if num_epochs is not None:
    if num_epochs < 1:
      raise ValueError(f"num_epochs must be >= 1, got {num_epochs}.")
    per_epoch = -(-num_examples // max(1, min(batch_size, num_examples)))
    return int(num_epochs) * per_epoch
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
  return int(num_steps)


def restore_variables(model: nn.Module, workdir: str,
                      image_shape: tuple[int, ...], *,
                      step: int | None = None) -> dict:
  """Loads a trained model's variables from a :func:`fit` workdir.

  The entry point for a teacher trained elsewhere (or by an earlier run of
  :func:`train_teacher`): only the parameters and batch statistics are read,
  so the optimizer it was trained with does not matter.

  Args:
    model: the module the checkpoint was trained as.
    workdir: the training run's directory (checkpoints in ``workdir/ckpt``).
    image_shape: ``(h, w, c)`` of one input image.
    step: the checkpoint's step (default: the latest).

  Returns:
    ``{"params", "batch_stats"?}`` for ``model.apply``.

  Raises:
    ValueError: when there is no such checkpoint or it does not match the
      model.
  """
  ckpt_dir = os.path.abspath(os.path.join(workdir, "ckpt"))
  if not os.path.isdir(ckpt_dir):
    raise ValueError(f"No checkpoints in {ckpt_dir!r}: expected the workdir "
                     f"of a train_teacher/train_student/fit run.")
  manager = ocp.CheckpointManager(ckpt_dir)
  available = manager.all_steps()
  if step is None:
    step = manager.latest_step()
  if step is None or step not in available:
    raise ValueError(f"No checkpoint at step {step!r} in {ckpt_dir!r}; "
                     f"available steps: {sorted(available)}.")
  restored = manager.restore(step, args=ocp.args.StandardRestore())
  expected = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, *image_shape))))
  variables = {"params": restored["params"]}
  if restored.get("batch_stats"):
    variables["batch_stats"] = restored["batch_stats"]
  shapes = lambda tree: jax.tree.map(lambda x: tuple(x.shape), tree)
  if shapes(variables) != shapes(dict(expected)):
    raise ValueError(f"The checkpoint in {ckpt_dir!r} (step {step}) does not "
                     f"match {type(model).__name__} on images of shape "
                     f"{tuple(image_shape)}: its variables are "
                     f"{shapes(variables)}, the model's are "
                     f"{shapes(dict(expected))}.")
  return jax.tree.map(jnp.asarray, variables)


def check_run_config(workdir: str, config: dict[str, Any], *,
                     ignore: tuple[str, ...] = ("num_steps",)) -> None:
  """Refuses to resume a workdir that was trained with another config.

  The first call writes ``workdir/config.json``; later calls compare with
  it. Keys in ``ignore`` may change (training longer resumes).

  Raises:
    ValueError: naming the keys whose saved and requested values differ.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    changed = {k: (saved.get(k), v) for k, v in config.items()
               if k not in ignore and saved.get(k) != v}
    if changed:
      raise ValueError(
          f"The run in {workdir} was trained with a different config "
          f"(saved vs requested: {changed}); use another workdir.")
  io.write_json_atomic(path, config)


def mean_std(values: list[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for a single value)."""
  arr = np.asarray(values, np.float64)
  return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def random_subset(labels: np.ndarray, ipc: int, seed: int) -> np.ndarray:
  """Indices of ``ipc`` random real images per class (the ``random`` set).

  Raises:
    ValueError: for an ipc < 1, a negative seed, or a class with fewer than
      ``ipc`` images.
  """
  ipc = checks.integer("ipc", ipc)
  seed = checks.integer("seed", seed, minimum=0)
  gen = np.random.default_rng(seed)
  picked = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    if len(idx) < ipc:
      raise ValueError(f"class {c} has {len(idx)} images, fewer than "
                       f"ipc={ipc}.")
    picked.append(gen.choice(idx, ipc, replace=False))
  return np.sort(np.concatenate(picked))
