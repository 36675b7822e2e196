"""Which knobs move a KD student on a random real subset of Fashion-MNIST.

Each variant (a JSON object: ``name``, ``ipc``, ``seeds``, ``aug`` and any
keyword of :func:`pqd_jax.train.trainer.train_student`) trains students on
IPC random real images per class with online KD from the teacher of
``benchmarks/student_fmnist.py`` and appends one row per seed to
``benchmarks/results/student_knobs.jsonl`` (test accuracy, curve, seconds);
a (name, seed) already there is skipped.

  python benchmarks/student_knobs.py '[{"name": "b4800dsa", "ipc": 1,
    "seeds": [0], "num_steps": 4800, "batch_size": 10, "warmup_steps": 240,
    "aug": [["flip", true], ["crop_scale", [0.08, 1.0]], ["dsa", true],
            ["cutmix", true]]}]'
"""

import json
import os
import shutil
import sys
import time

import harness
import numpy as np

from pqd_jax.data import pipeline, sources
from pqd_jax.train import steps, trainer

OUT = os.path.join(harness.RESULTS_DIR, "student_knobs.jsonl")
WORKROOT = os.path.join(harness.CACHE_DIR, "student_knobs")
DEFAULT_AUG = (("flip", True), ("crop_scale", (0.5, 1.0)), ("cutmix", True))


def main():
  variants = json.loads(sys.argv[1])
  results = harness.Results(OUT, key=("name", "seed"))
  train_src = sources.open_source("fashion_mnist", "train")
  test_src = sources.open_source("fashion_mnist", "test")
  test_x = pipeline.to_unit_range(test_src.read())
  model, tvars = harness.fmnist_teacher(harness.TEACHER_DIR)
  x_all = train_src.read()
  acc = lambda st: {"acc": steps.accuracy(model, st, test_x, test_src.labels)}
  for v in variants:
    v = dict(v)
    name, ipc, seeds = v.pop("name"), v.pop("ipc", 1), v.pop("seeds", [0])
    aug = tuple((a, tuple(b) if isinstance(b, list) else b)
                for a, b in v.pop("aug", DEFAULT_AUG))
    for seed in seeds:
      if not results.todo((name, seed)):
        continue
      idx = trainer.random_subset(train_src.labels, ipc, seed)
      workdir = os.path.join(WORKROOT, f"{name}_{seed}")
      shutil.rmtree(workdir, ignore_errors=True)
      state, seconds = harness.timed(
          trainer.train_student, model, pipeline.to_unit_range(x_all[idx]),
          train_src.labels[idx], np.ones(len(idx)), workdir, num_classes=10,
          seed=seed, teacher=model, teacher_variables=tvars, aug=aug,
          progress=False, eval_fn=acc, **v)
      curve = [(r["step"], r["acc"])
               for r in harness.training_curve(workdir, "step", "acc")]
      row = dict(name=name, seed=seed, ipc=ipc, aug=aug,
                 acc=acc(state)["acc"], s=seconds, curve=curve,
                 date=time.strftime("%Y-%m-%d"), **v)
      print(row, flush=True)
      results.append(row)


if __name__ == "__main__":
  main()
