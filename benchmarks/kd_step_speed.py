"""Seconds per KD student step on this machine (IPC 10, batch 100), warm.

The step of the soft-label cells of ``distill_accuracy.py``: the student,
teacher and augmentation of the Fashion-MNIST config (the teacher with
random weights: the speed does not depend on them), 10 real images per
class. Trains 20 and ``steps`` steps and prints the difference per
step, so compilation is excluded. For the throughput of two processes, one
per core, run two copies at once under ``taskset -c 0`` / ``taskset -c 1``:

  python benchmarks/kd_step_speed.py 120 single
  taskset -c 0 python benchmarks/kd_step_speed.py 120 a &
  taskset -c 1 python benchmarks/kd_step_speed.py 120 b
"""

import os
import shutil
import sys
import tempfile

import harness
import jax
import numpy as np

from pqd_jax import models
from pqd_jax.configs import fashion_mnist
from pqd_jax.data import pipeline, sources
from pqd_jax.train import steps, trainer

WARM_STEPS = 20


def seconds_per_step(num_steps: int, workroot: str) -> float:
  """(time of ``num_steps`` steps − time of 20) / (``num_steps`` − 20)."""
  if num_steps <= WARM_STEPS:
    raise ValueError(f"num_steps={num_steps}; expected more than "
                     f"{WARM_STEPS}.")
  config = fashion_mnist.get_config()
  src = sources.open_source("fashion_mnist", "train")
  idx = trainer.random_subset(src.labels, 10, 0)
  x = pipeline.to_unit_range(src.read()[idx])
  teacher = models.build_classifier(config.teacher, 10)
  teacher_variables = teacher.init(jax.random.PRNGKey(1), x[:2])
  times = {}
  for n in (WARM_STEPS, num_steps):
    workdir = os.path.join(workroot, str(n))
    shutil.rmtree(workdir, ignore_errors=True)
    _, times[n] = harness.timed(
        trainer.train_student, models.build_classifier(config.student, 10),
        x, src.labels[idx], np.ones(len(idx)), workdir, num_classes=10,
        num_steps=n, batch_size=config.student.batch_size, teacher=teacher,
        teacher_variables=teacher_variables,
        temperature=config.student.temperature,
        aug=steps.aug_from_config(config.student), progress=False,
        checkpoint_every=10 * num_steps)
  return (times[num_steps] - times[WARM_STEPS]) / (num_steps - WARM_STEPS)


def main() -> None:
  num_steps = int(sys.argv[1]) if len(sys.argv) > 1 else 120
  tag = sys.argv[2] if len(sys.argv) > 2 else "run"
  with tempfile.TemporaryDirectory() as workroot:
    print(tag, "s/step", seconds_per_step(num_steps, workroot), flush=True)


if __name__ == "__main__":
  main()
