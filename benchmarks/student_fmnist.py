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
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from pqd_jax import models
from pqd_jax.data import pipeline, sources
from pqd_jax.train import steps, trainer

RESULTS = os.path.join(os.path.dirname(__file__), "results",
                       "student_fmnist.jsonl")
DEFAULT_WORKDIR = os.path.expanduser("~/.cache/pqd_jax/bench/student_fmnist")
# Forward FLOPs of ConvNet-3 w128 on 28x28x1 (3x3 convs at 28, 14, 7 + head).
CONVNET_FWD_FLOPS = 2 * (28 * 28 * 9 * 128 + (14 * 14 + 7 * 7) * 9 * 128
                         * 128 + 1152 * 10)


def done_cells(path):
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return {r["cell"]: r for r in rows}


def append(path, row):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "a") as f:
    f.write(json.dumps(row) + "\n")


def convnet():
  return models.ConvNet(num_classes=10, width=128, depth=3, norm="instance")


def throughput():
  model = convnet()
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
    state, _ = fn(state, jax.random.key(0))
    jax.block_until_ready(state.params)
    t0 = time.perf_counter()
    for i in range(20):
      state, _ = fn(state, jax.random.key(i))
    jax.block_until_ready(state.params)
    out[name + "_images_per_s"] = 20 * 128 / (time.perf_counter() - t0)
  train_flops = 3 * CONVNET_FWD_FLOPS
  out["train_step_mflops_per_image"] = train_flops / 1e6
  out["teacher_ce_gflops"] = out["teacher_ce_images_per_s"] * train_flops / 1e9
  out["student_kd_gflops"] = (out["student_kd_images_per_s"]
                              * (train_flops + CONVNET_FWD_FLOPS) / 1e9)
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
  done = done_cells(args.out)
  wanted = None if args.cells == "all" else set(args.cells.split(","))
  run = lambda cell: (wanted is None or cell in wanted) and cell not in done

  if run("throughput"):
    append(args.out, {"cell": "throughput", "date": time.strftime("%Y-%m-%d"),
                      **throughput()})

  train_src = sources.open_source("fashion_mnist", "train")
  test_src = sources.open_source("fashion_mnist", "test")
  test_x = pipeline.to_unit_range(test_src.read())
  test_y = test_src.labels
  model = convnet()
  test_acc = lambda s: {"test_accuracy": steps.accuracy(model, s, test_x,
                                                        test_y)}

  teacher_dir = os.path.join(args.workdir, "teacher")
  if wanted is not None and wanted <= {"throughput"}:
    return
  t0 = time.perf_counter()
  teacher_state = trainer.train_teacher(
      model, train_src, teacher_dir, num_steps=args.teacher_steps,
      batch_size=128, eval_fn=test_acc, eval_every=940)
  if run("teacher"):
    with open(os.path.join(teacher_dir, "metrics.jsonl")) as f:
      curve = [json.loads(line) for line in f]
    append(args.out, {
        "cell": "teacher", "date": time.strftime("%Y-%m-%d"),
        "steps": args.teacher_steps, "batch": 128,
        "test_accuracy": test_acc(teacher_state)["test_accuracy"],
        "wall_s_this_run": time.perf_counter() - t0,
        "curve": [{k: r[k] for k in ("step", "seconds", "test_accuracy")}
                  for r in curve if "test_accuracy" in r]})
  tvars = trainer.variables_of(teacher_state)

  train_x_all = train_src.read()
  kd_aug = (("flip", True), ("crop_scale", (0.08, 1.0)), ("dsa", True),
            ("cutmix", True))
  for kind, ipcs in (("kd", (1, 10)), ("hard", (10,))):
    for ipc in ipcs:
      for seed in range(3):
        cell = f"random_{kind}_ipc{ipc}_seed{seed}"
        if not run(cell):
          continue
        idx = trainer.random_subset(train_src.labels, ipc, seed)
        images = pipeline.to_unit_range(train_x_all[idx])
        labels = train_src.labels[idx]
        if kind == "kd":
          num_steps = args.ipc1_steps if ipc == 1 else args.ipc10_steps
        else:
          num_steps = 300
        workdir = os.path.join(args.workdir, cell)
        t0 = time.perf_counter()
        state = trainer.train_student(
            convnet(), images, labels, np.ones(len(idx)), workdir,
            num_classes=10, num_steps=num_steps, batch_size=100, seed=seed,
            warmup_steps=num_steps // 20,
            teacher=model if kind == "kd" else None,
            teacher_variables=tvars if kind == "kd" else None,
            aug=kd_aug if kind == "kd" else (("dsa", True),),
            eval_fn=test_acc, eval_every=num_steps // 8)
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
          curve = [{k: r[k] for k in ("step", "seconds", "test_accuracy")}
                   for r in map(json.loads, f) if "test_accuracy" in r]
        append(args.out, {
            "cell": cell, "date": time.strftime("%Y-%m-%d"),
            "steps": num_steps, "batch": min(100, len(idx)),
            "test_accuracy": test_acc(state)["test_accuracy"],
            "wall_s": time.perf_counter() - t0, "curve": curve})


if __name__ == "__main__":
  main()
