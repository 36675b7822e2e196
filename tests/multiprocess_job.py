"""One process of the multi-process test (tests/test_distributed.py).

Usage: ``python -m tests.multiprocess_job PROCESS_ID NUM_PROCESSES PORT
WORKDIR``. Quantizes labelled blobs, trains a small KD student for a few steps
with checkpoints, resumes it for more, and (process 0) writes the results to
``WORKDIR/result.json``. With one process it runs alone.
"""

import json
import os
import sys

from pqd_jax import distributed


def main(argv):
  process_id, num_processes, port = (int(a) for a in argv[:3])
  workdir = argv[3]
  if num_processes > 1:
    distributed.initialize(f"localhost:{port}", num_processes, process_id)

  import jax
  import numpy as np

  import pqd_jax
  from pqd_jax import models, sharding
  from pqd_jax.train import steps, trainer
  from tests.conftest import labelled_blobs

  x, y = labelled_blobs((41, 36, 44), dim=6)
  q = pqd_jax.quantize(x, y, 3, rng=jax.random.key(1))

  gen = np.random.default_rng(0)
  images = gen.normal(size=(10, 8, 8, 1)).astype(np.float32)
  labels = np.arange(10) % 3
  weights = np.linspace(0.5, 1.5, 10).astype(np.float32)
  teacher = models.ConvNet(num_classes=3, width=8, depth=2)
  teacher_variables = teacher.init(jax.random.key(9), images[:1])
  student = models.ConvNet(num_classes=3, width=8, depth=2)
  kwargs = dict(num_classes=3, batch_size=6, teacher=teacher,
                teacher_variables=teacher_variables, checkpoint_every=2,
                progress=False, learning_rate=3e-3)
  # Three steps, then a restart that resumes from the step-3 checkpoint.
  trainer.train_student(student, images, labels, weights, workdir,
                        num_steps=3, **kwargs)
  state = trainer.train_student(student, images, labels, weights, workdir,
                                num_steps=5, **kwargs)
  accuracy = steps.accuracy(student, state, images, labels)
  result = {
      "devices": jax.device_count(),
      "processes": jax.process_count(),
      "centroids": sharding.to_host(q.centroids).tolist(),
      "counts": sharding.to_host(q.counts).tolist(),
      "distortion": sharding.to_host(q.distortion).tolist(),
      "params": [sharding.to_host(p).ravel().tolist()
                 for p in jax.tree.leaves(state.params)],
      "step": int(sharding.to_host(state.step)),
      "accuracy": accuracy,
  }
  if distributed.is_coordinator():
    with open(os.path.join(workdir, "result.json"), "w") as f:
      json.dump(result, f)
  distributed.barrier("done")


if __name__ == "__main__":
  main(sys.argv[1:])
