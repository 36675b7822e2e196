"""The resumable training loop ``fit`` and the checkpoints it leaves.

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

:func:`restore_variables` reads a finished run's model back from its
checkpoints; :func:`check_run_config` keeps a workdir from being resumed
with another configuration.
"""

import os
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from tqdm import tqdm

from pqd_jax import distributed, sharding
from pqd_jax import workdir as workdir_lib
from pqd_jax.train import steps

__all__ = ["check_run_config", "fit", "restore_variables"]

# Orbax (tensorstore) reports a damaged checkpoint with a bare Exception.
_ORBAX_ERRORS = (Exception,)


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
  ckpt_dir = os.path.abspath(os.path.join(workdir, "ckpt"))
  manager = ocp.CheckpointManager(
      ckpt_dir,
      options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
  last = manager.latest_step()
  if last is not None:
    with workdir_lib.reading(
        os.path.join(ckpt_dir, str(last)), "delete it to resume from the "
        f"checkpoint before it, or delete {workdir} to train again",
        also=_ORBAX_ERRORS):
      state = manager.restore(last, args=ocp.args.StandardRestore(state))
  start = int(state.step)
  metrics_path = os.path.join(workdir, "metrics.jsonl")

  def log(row):
    if coordinator:
      workdir_lib.append_jsonl(metrics_path, row)

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


def checkpoint_problem(workdir: str, step: int) -> str:
  """``""`` when ``workdir/ckpt`` holds the committed checkpoint of ``step``.

  Orbax writes a step under a temporary name and renames it when complete,
  so the step's own directory is there only once it is whole; a training
  whose last checkpoint was lost would otherwise restore an earlier step.
  """
  if os.path.isdir(os.path.join(workdir, "ckpt", str(step))):
    return ""
  return f"ckpt/ has no committed checkpoint of step {step}"


def restore_variables(model: nn.Module, workdir: str,
                      image_shape: tuple[int, ...], *,
                      step: int | None = None) -> dict:
  """Loads a trained model's variables from a :func:`fit` workdir.

  The entry point for a teacher trained elsewhere (or by an earlier run of
  :func:`pqd_jax.train.teacher.train_teacher`): only the parameters and
  batch statistics are read, so the optimizer it was trained with does not
  matter.

  Args:
    model: the module the checkpoint was trained as.
    workdir: the training run's directory (checkpoints in ``workdir/ckpt``).
    image_shape: ``(h, w, c)`` of one input image.
    step: the checkpoint's step (default: the latest).

  Returns:
    ``{"params", "batch_stats"?}`` for ``model.apply``.

  Raises:
    ValueError: when there is no such checkpoint, it does not match the
      model, or (:class:`pqd_jax.workdir.UnreadableFileError`) it is cut
      short or corrupt.
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
  others = sorted(set(available) - {step})
  with workdir_lib.reading(
      os.path.join(ckpt_dir, str(step)),
      f"restore another step (available: {others}) or train again"
      if others else "train again", also=_ORBAX_ERRORS):
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
    ValueError: naming the keys whose saved and requested values differ, or
      (:class:`pqd_jax.workdir.UnreadableFileError`) for a saved config that
      is cut short or corrupt.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    saved = workdir_lib.load_json(path, workdir_lib.remake(workdir))
    changed = {k: (saved.get(k), v) for k, v in config.items()
               if k not in ignore and saved.get(k) != v}
    if changed:
      raise ValueError(
          f"The run in {workdir} was trained with a different config "
          f"(saved vs requested: {changed}); use another workdir.")
  workdir_lib.write_json(path, config)
