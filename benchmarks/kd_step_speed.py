"""Seconds per KD student step on this machine (IPC 10, batch 100), warm.

The step of the soft-label cells of ``distill_accuracy.py`` and
``distill_table.py``: the student, teacher and augmentation of the
Fashion-MNIST config (the teacher with random weights: the speed does not
depend on them), 10 real images per class.

Two measurements:

- ``steps`` (the default): trains 20 and ``--steps`` steps through
  ``trainer.train_student`` and prints the difference per step, so
  compilation is excluded.
- ``parts``: where a step's time goes. The whole jitted step and its parts
  compiled alone (the augmentation, the teacher's forward pass, the
  student's forward and backward pass with and without its instance norm,
  and the student's three convolutions' forward and backward passes
  alone), each with XLA's FLOP count (``cost_analysis``), its fastest and
  median time over ``--repeats`` calls, and the FLOP rate. The
  convolutions' rate is the ceiling the step's FLOPs can be run at by this
  network on this machine.

For the throughput of two processes, one per core, run two copies at once
under ``taskset -c 0`` / ``taskset -c 1``:

  python benchmarks/kd_step_speed.py --steps=120 --tag=single
  taskset -c 0 python benchmarks/kd_step_speed.py --steps=120 --tag=a &
  taskset -c 1 python benchmarks/kd_step_speed.py --steps=120 --tag=b
  taskset -c 0 python benchmarks/kd_step_speed.py --mode=parts
"""

import argparse
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import harness
import jax
import jax.numpy as jnp
import numpy as np

from pqd_jax import models
from pqd_jax.configs import fashion_mnist
from pqd_jax.data import pipeline, sources
from pqd_jax.train import losses, steps, trainer

WARM_STEPS = 20
BATCH = 100


def _inputs() -> tuple[Any, np.ndarray, np.ndarray]:
  """The config, and 10 real training images per class with their labels."""
  config = fashion_mnist.get_config()
  src = sources.open_source("fashion_mnist", "train")
  idx = trainer.random_subset(src.labels, 10, 0)
  return config, pipeline.to_unit_range(src.read()[idx]), src.labels[idx]


def seconds_per_step(num_steps: int, workroot: str) -> float:
  """(time of ``num_steps`` steps − time of 20) / (``num_steps`` − 20)."""
  if num_steps <= WARM_STEPS:
    raise ValueError(f"num_steps={num_steps}; expected more than "
                     f"{WARM_STEPS}.")
  config, x, labels = _inputs()
  teacher = models.build_classifier(config.teacher, 10)
  teacher_variables = teacher.init(jax.random.PRNGKey(1), x[:2])
  times = {}
  for n in (WARM_STEPS, num_steps):
    workdir = os.path.join(workroot, str(n))
    shutil.rmtree(workdir, ignore_errors=True)
    _, times[n] = harness.timed(
        trainer.train_student, models.build_classifier(config.student, 10),
        x, labels, np.ones(len(x)), workdir, num_classes=10,
        num_steps=n, batch_size=config.student.batch_size, teacher=teacher,
        teacher_variables=teacher_variables,
        temperature=config.student.temperature,
        aug=steps.aug_from_config(config.student), progress=False,
        checkpoint_every=10 * num_steps)
  return (times[num_steps] - times[WARM_STEPS]) / (num_steps - WARM_STEPS)


def _part(name: str, fn: Callable, args: tuple, repeats: int,
          donated: bool = False) -> dict:
  """``fn(*args)`` compiled alone: its GFLOP and its time over ``repeats``.

  With ``donated`` the first argument is a state ``fn`` donates and
  returns first; each call then takes the previous call's state.
  """
  compiled = jax.jit(fn, donate_argnums=(0,) if donated else ()).lower(
      *args).compile()
  gflop = harness.compiled_flops(compiled) / 1e9
  carry = [args[0]]

  def call():
    out = compiled(carry[0], *args[1:])
    if donated:
      carry[0] = out[0]
    return out

  timing = harness.time_calls(call, repeats)
  return {"part": name, "gflop": gflop, "best_s": timing.best,
          "median_s": timing.median,
          "gflops_best": gflop / timing.best}


def _grad_of(model: Any, teacher_logits: jnp.ndarray,
             temperature: float) -> Callable:
  """The student's KD loss gradient on fixed teacher logits."""
  def loss(params, views):
    logits = model.apply({"params": params}, views, train=True)
    return jnp.mean(losses.kd_per_sample(logits, teacher_logits,
                                         temperature))
  return jax.grad(loss)


def _conv_layers(batch: int, width: int, depth: int, side: int,
                 channels: int) -> list[tuple[tuple, tuple]]:
  """``(input shape, kernel shape)`` of the ConvNet's convolutions."""
  shapes, c = [], channels
  for _ in range(depth):
    shapes.append(((batch, side, side, c), (3, 3, c, width)))
    side, c = side // 2, width
  return shapes


def step_parts(repeats: int, batch: int = BATCH) -> list[dict]:
  """The whole KD step and its parts at ``batch``, each compiled alone.

  Returns:
    One row per part: ``part``, ``gflop`` (XLA's count), ``best_s``,
    ``median_s`` and ``gflops_best`` (GFLOP / best_s).
  """
  config, x, _ = _inputs()
  sc = config.student
  student = models.build_classifier(sc, 10)
  teacher = models.build_classifier(config.teacher, 10)
  if not 1 <= batch <= len(x):
    raise ValueError(f"batch={batch}; expected 1 to {len(x)}.")
  images = jnp.asarray(x[:batch])
  weights = jnp.ones(batch)
  teacher_variables = teacher.init(jax.random.PRNGKey(1), images[:2])
  tx = steps.make_optimizer(sc.optimizer, sc.learning_rate, 1000,
                            warmup_steps=int(sc.warmup_fraction * 1000),
                            weight_decay=sc.weight_decay)
  state = steps.create_state(student, jax.random.PRNGKey(0), images.shape[1:],
                             tx)
  aug = steps.aug_from_config(sc)
  key = jax.random.key(0)
  rows = [_part(
      "kd_step", lambda s, b, k: steps.kd_step(
          s, b, k, model=student, teacher=teacher,
          teacher_variables=teacher_variables, tx=tx,
          temperature=sc.temperature, aug=aug),
      (state, {"image": images, "weight": weights}, key), repeats,
      donated=True)]
  settings = steps.check_aug(aug)
  rows.append(_part(
      "augmentation",
      lambda k, im, w: steps.augmented_views(k, im, w, settings),
      (key, images, weights), repeats))
  rows.append(_part(
      "teacher forward",
      lambda v, im: teacher.apply(v, im, train=False),
      (teacher_variables, images), repeats))
  teacher_logits = teacher.apply(teacher_variables, images, train=False)
  for name, norm in (("student fwd+bwd", sc.norm),
                     ("student fwd+bwd, no norm", "none")):
    model = student.clone(norm=norm)
    params = model.init(jax.random.PRNGKey(0), images[:1])["params"]
    rows.append(_part(name, _grad_of(model, teacher_logits, sc.temperature),
                      (params, images), repeats))

  layers = _conv_layers(batch, sc.width, sc.depth, images.shape[1],
                        images.shape[-1])

  def convs(kernels, inputs, cotangents):
    # vjp with random cotangents, so that the backward convolutions are
    # real ones (a loss of sum(conv) lets XLA simplify them); no gradient
    # for the first layer's input, the images, as in the student's step.
    def outputs(kernels, hidden):
      return [jax.lax.conv_general_dilated(
          a, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
              for a, k in zip([inputs[0], *hidden], kernels, strict=True)]
    out, vjp = jax.vjp(outputs, kernels, inputs[1:])
    return out, vjp(cotangents)

  rng = np.random.default_rng(0)

  def normal(shape):
    return jnp.asarray(rng.standard_normal(shape), jnp.float32)

  kernels = [normal(k) for _, k in layers]
  inputs = [normal(a) for a, _ in layers]
  cotangents = [normal(a[:3] + k[3:]) for a, k in layers]
  rows.append(_part("student convs fwd+bwd", convs,
                    (kernels, inputs, cotangents),
                    repeats))
  return rows


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--mode", choices=("steps", "parts"), default="steps")
  parser.add_argument("--steps", type=int, default=120)
  parser.add_argument("--tag", default="run")
  parser.add_argument("--repeats", type=int, default=20)
  args = parser.parse_args(argv)
  print(harness.machine(), flush=True)
  if args.mode == "parts":
    print("| part | GFLOP | best s | median s | GFLOP/s (best) |")
    print("|---|---|---|---|---|")
    for row in step_parts(args.repeats):
      print(f"| {row['part']} | {row['gflop']:.2f} | {row['best_s']:.4f} | "
            f"{row['median_s']:.4f} | {row['gflops_best']:.1f} |",
            flush=True)
    return
  with tempfile.TemporaryDirectory() as workroot:
    print(args.tag, "s/step", seconds_per_step(args.steps, workroot),
          flush=True)


if __name__ == "__main__":
  main()
