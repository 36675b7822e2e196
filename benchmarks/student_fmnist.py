"""Teacher and random-real students on Fashion-MNIST: the trainer's bar.

Cells, each appended to ``benchmarks/results/student_fmnist.jsonl`` when
finished and skipped on a re-run (training itself resumes from orbax
checkpoints in ``--workdir``, so a cell can span sessions):

- ``throughput``: images/s of the teacher (CE) and student (KD) steps, batch
  128, next to the FLOPs of a ConvNet-3 w128 step;
- ``teacher``: ConvNet-3 (width 128, instance norm) on the 60k training
  images, AdamW, flip + RandomResizedCrop(0.6–1); test accuracy curve;
- ``random_kd_ipc{1,10}_seed{s}``: IPC random real images per class, online
  KD from the teacher (T = 4; flip + RandomResizedCrop(0.08–1) + DSA +
  CutMix; AdamW 1e-3 with 5% warm-up; uniform weights); IPC 1: 9,600 steps
  of 10 images, IPC 10: 2,400 steps of 100; test accuracy every 1/8 of the
  run (the accuracy-versus-steps curve);
- ``random_hard_ipc10_seed{s}``: the same images, hard labels, DSA
  augmentation, 300 steps of 100 (the prototype's calibration of the
  published 73.8%).

  python benchmarks/student_fmnist.py --cells teacher
  python benchmarks/student_fmnist.py               # everything
"""

import argparse
import os
import time

import harness
import jax
import jax.numpy as jnp
import numpy as np

from pqd_jax.data import pipeline, sources
from pqd_jax.train import steps, trainer

RESULTS = os.path.join(harness.RESULTS_DIR, "student_fmnist.jsonl")
DEFAULT_WORKDIR = os.path.join(harness.CACHE_DIR, "student_fmnist")
# The fields of a training curve.
CURVE = ("step", "seconds", "test_accuracy")


def convnet_forward_flops(model, side: int = 28, channels: int = 1) -> int:
  """Multiply-adds × 2 of a ConvNet's 3x3 convs and head on one image.

  The convs run at ``side``, ``side // 2``, ... (a 2x2 pool after each);
  norms, activations and pools are left out.
  """
  flops, c_in = 0, channels
  for _ in range(model.depth):
    flops += side * side * 9 * c_in * model.width
    c_in, side = model.width, side // 2
  return 2 * (flops + side * side * model.width * model.num_classes)


def throughput():
  model, _ = harness.fmnist_teacher()
  tx = steps.make_optimizer("adamw", 1e-3, 1000)
  b = {"image": jax.random.normal(jax.random.key(1), (128, 28, 28, 1)),
       "label": jnp.arange(128) % 10, "weight": jnp.ones(128)}
  out = {}
  teacher = steps.create_state(model, jax.random.key(5), (28, 28, 1), tx)
  tvars = trainer.variables_of(teacher)
  for name in ("teacher_ce", "student_kd"):
    state = steps.create_state(model, jax.random.key(0), (28, 28, 1), tx)
    if name == "teacher_ce":
      fn = lambda s, k: steps.ce_step(
          s, b, k, model=model, tx=tx,
          aug=(("flip", True), ("crop_scale", (0.6, 1.0))))
    else:
      fn = lambda s, k: steps.kd_step(
          s, b, k, model=model, teacher=model, teacher_variables=tvars,
          tx=tx, temperature=4.0,
          aug=(("flip", True), ("crop_scale", (0.5, 1.0)), ("cutmix", True)))
    _, seconds = harness.time_steps(
        lambda s, i, fn=fn: fn(s, jax.random.key(i))[0], state, 20)
    out[name + "_images_per_s"] = 20 * 128 / seconds
  forward_flops = convnet_forward_flops(model)
  train_flops = 3 * forward_flops
  out["train_step_mflops_per_image"] = train_flops / 1e6
  out["teacher_ce_gflops"] = out["teacher_ce_images_per_s"] * train_flops / 1e9
  out["student_kd_gflops"] = (out["student_kd_images_per_s"]
                              * (train_flops + forward_flops) / 1e9)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cells", default="all")
  parser.add_argument("--workdir", default=DEFAULT_WORKDIR)
  parser.add_argument("--teacher-steps", type=int, default=9400)
  parser.add_argument("--ipc1-steps", type=int, default=9600)
  parser.add_argument("--ipc10-steps", type=int, default=2400)
  parser.add_argument("--out", default=RESULTS)
  args = parser.parse_args()
  results = harness.Results(args.out, cells=args.cells)

  if results.todo("throughput"):
    results.append({"cell": "throughput", "date": time.strftime("%Y-%m-%d"),
                    **throughput()})

  train_src = sources.open_source("fashion_mnist", "train")
  test_src = sources.open_source("fashion_mnist", "test")
  test_x = pipeline.to_unit_range(test_src.read())
  test_y = test_src.labels
  model, _ = harness.fmnist_teacher()
  test_acc = lambda s: {"test_accuracy": steps.accuracy(model, s, test_x,
                                                        test_y)}

  teacher_dir = os.path.join(args.workdir, "teacher")
  if results.only("throughput"):
    return
  teacher_state, teacher_s = harness.timed(
      trainer.train_teacher, model, train_src, teacher_dir,
      num_steps=args.teacher_steps, batch_size=128, eval_fn=test_acc,
      eval_every=940)
  if results.todo("teacher"):
    results.append({
        "cell": "teacher", "date": time.strftime("%Y-%m-%d"),
        "steps": args.teacher_steps, "batch": 128,
        "test_accuracy": test_acc(teacher_state)["test_accuracy"],
        "wall_s_this_run": teacher_s,
        "curve": harness.training_curve(teacher_dir, *CURVE)})
  tvars = trainer.variables_of(teacher_state)

  train_x_all = train_src.read()
  kd_aug = (("flip", True), ("crop_scale", (0.08, 1.0)), ("dsa", True),
            ("cutmix", True))
  for kind, ipcs in (("kd", (1, 10)), ("hard", (10,))):
    for ipc in ipcs:
      for seed in range(3):
        cell = f"random_{kind}_ipc{ipc}_seed{seed}"
        if not results.todo(cell):
          continue
        idx = trainer.random_subset(train_src.labels, ipc, seed)
        images = pipeline.to_unit_range(train_x_all[idx])
        labels = train_src.labels[idx]
        if kind == "kd":
          num_steps = args.ipc1_steps if ipc == 1 else args.ipc10_steps
        else:
          num_steps = 300
        workdir = os.path.join(args.workdir, cell)
        state, seconds = harness.timed(
            trainer.train_student, model, images, labels, np.ones(len(idx)),
            workdir, num_classes=10, num_steps=num_steps, batch_size=100,
            seed=seed, warmup_steps=num_steps // 20,
            teacher=model if kind == "kd" else None,
            teacher_variables=tvars if kind == "kd" else None,
            aug=kd_aug if kind == "kd" else (("dsa", True),),
            eval_fn=test_acc, eval_every=num_steps // 8)
        results.append({
            "cell": cell, "date": time.strftime("%Y-%m-%d"),
            "steps": num_steps, "batch": min(100, len(idx)),
            "test_accuracy": test_acc(state)["test_accuracy"],
            "wall_s": seconds,
            "curve": harness.training_curve(workdir, *CURVE)})


if __name__ == "__main__":
  main()
