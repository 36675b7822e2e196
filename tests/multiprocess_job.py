"""One process of the multi-process test (tests/test_distributed.py).

Usage: ``python -m tests.multiprocess_job PROCESS_ID NUM_PROCESSES PORT
WORKDIR``. Quantizes labelled blobs, trains a small KD student for a few steps
with checkpoints, resumes it for more, trains a teacher on an image source for
a few steps, and (process 0) writes the results to ``WORKDIR/result.json``
(each process its counts of teacher records and latent rows read to
``WORKDIR/reads<i>.json``). With
one process it runs alone.
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
  from pqd_jax.autoencoder import latents
  from pqd_jax.data import sources
  from pqd_jax.quantization import class_files
  from pqd_jax.train import steps, trainer
  from tests.conftest import labelled_blobs

  x, y = labelled_blobs((41, 36, 44), dim=6)
  q = pqd_jax.quantize(x, y, 3, rng=jax.random.key(1))

  # The same points from a latents artefact, read lazily: each process
  # reads only the rows of its own devices.
  latent_dir = os.path.join(workdir, "latents")
  if distributed.is_coordinator():
    latents.save(latent_dir, x, y // 10, ["a", "b", "c"], dtype="float32")
  distributed.barrier("latents saved")
  lazy, lazy_labels = latents.load(latent_dir, lazy=True)
  rows_read = []

  def read(start, stop):
    rows_read.append(stop - start)
    return lazy.read(start, stop)

  q_lazy = pqd_jax.quantize(sharding.LazyRows(read, lazy.shape, lazy.dtype),
                            lazy_labels, 3, rng=jax.random.key(1))
  q_labels = pqd_jax.quantize(x, y // 10, 3, rng=jax.random.key(1))  # 0 1 2

  # The pipeline's stream method: groups of classes shared out among the
  # processes (one class per group here), each streaming only its files.
  streamed_classes = []
  stream = latents.stream

  def recording_stream(directory, *args, classes=None, **kw):
    streamed_classes.extend(classes)
    return stream(directory, *args, classes=classes, **kw)

  latents.stream = recording_stream
  q_stream = class_files.quantize_class_files(
      latent_dir, 3, num_passes=1, rng=jax.random.key(0),
      scratch=os.path.join(workdir, "scratch"), class_group=1)
  latents.stream = stream

  # Batched inference (as the encoder's) on lazy rows: the same.
  table = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
  mapped_rows = []

  def read_table(start, stop):
    mapped_rows.append(stop - start)
    return table[start:stop]

  mapped = sharding.map_batches(
      jax.jit(lambda t, start: 2 * t),
      (sharding.LazyRows(read_table, table.shape, table.dtype),), 16)

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

  # A teacher on an image source: each process reads only its devices'
  # records of every batch.
  class CountingSource(sources.ArraySource):
    reads = 0

    def __getitem__(self, index):
      CountingSource.reads += 1
      return super().__getitem__(index)

  source = CountingSource(
      gen.integers(0, 256, (40, 8, 8, 1), dtype=np.uint8),
      np.arange(40) % 3, ("a", "b", "c"))
  teacher_state = trainer.train_teacher(
      models.ConvNet(num_classes=3, width=8, depth=2), source,
      os.path.join(workdir, "teacher"), num_steps=3, batch_size=8,
      progress=False)
  with open(os.path.join(workdir, f"reads{jax.process_index()}.json"),
            "w") as f:
    json.dump({"records": CountingSource.reads,
               "latent_rows": sum(rows_read),
               "mapped_rows": sum(mapped_rows),
               "streamed_classes": sorted(set(streamed_classes)),
               "decided": distributed.from_coordinator(
                   lambda: ["digest", jax.process_index(), True])}, f)
  result = {
      "devices": jax.device_count(),
      "processes": jax.process_count(),
      "centroids": sharding.to_host(q.centroids).tolist(),
      "counts": sharding.to_host(q.counts).tolist(),
      "distortion": sharding.to_host(q.distortion).tolist(),
      "lazy_centroids": sharding.to_host(q_lazy.centroids).tolist(),
      "memory_centroids": sharding.to_host(q_labels.centroids).tolist(),
      "stream_centroids": np.asarray(q_stream.centroids).tolist(),
      "stream_counts": np.asarray(q_stream.counts).tolist(),
      "mapped_ok": bool(np.array_equal(mapped, 2 * table)),
      "params": [sharding.to_host(p).ravel().tolist()
                 for p in jax.tree.leaves(state.params)],
      "step": int(sharding.to_host(state.step)),
      "teacher_params": [sharding.to_host(p).ravel().tolist()
                         for p in jax.tree.leaves(teacher_state.params)],
      "accuracy": accuracy,
  }
  if distributed.is_coordinator():
    with open(os.path.join(workdir, "result.json"), "w") as f:
      json.dump(result, f)
  distributed.barrier("done")


if __name__ == "__main__":
  main(sys.argv[1:])
