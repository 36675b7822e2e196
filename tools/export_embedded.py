"""Exports the trained Fashion-MNIST checkpoints into the package's assets.

Copies the autoencoder of ``benchmarks/autoencoder_fmnist.py``, the prior of
``benchmarks/prior_fmnist.py`` (UNet weights as float16) and the teacher of
``benchmarks/student_fmnist.py`` into ``pqd_jax/assets/fashion_mnist``, each
with a ``provenance.json``: the training command, seed, date, the metrics
recorded by its benchmark, and metrics measured here on a fixed slice of the
test split, which ``tests/test_embedded.py`` re-measures.

Run from the repository root (the default checkpoint paths are the
benchmarks'):

  python tools/export_embedded.py
"""

import argparse
import os
import time

import flax.linen as nn

from pqd_jax import embedded, models
from pqd_jax.configs import fashion_mnist
from pqd_jax.train import trainer

# Where the benchmarks keep the models they train.
BENCH = os.path.expanduser("~/.cache/pqd_jax/bench")


def teacher_model() -> nn.Module:
  """The Fashion-MNIST config's teacher network (untrained)."""
  return models.build_classifier(fashion_mnist.get_config().teacher, 10)


def records(date: str) -> dict[str, dict]:
  """The provenance of each exported checkpoint, before its slice metrics.

  Args:
    date: the export date (``YYYY-MM-DD``).
  """
  teacher = fashion_mnist.get_config().teacher
  return {
      "autoencoder": {
          "command": "python benchmarks/autoencoder_fmnist.py --workdir "
                     "runs/autoencoder_fmnist",
          "config": "pqd_jax/configs/fashion_mnist.py: autoencoder",
          "seed": 0, "steps": 2400, "exported": date,
          "benchmark": {"test_psnr_db": 24.08, "train_minutes": 16.6}},
      "prior": {
          "command": "python benchmarks/prior_fmnist.py --cells train "
                     "--eval-every 850",
          "config": "pqd_jax/configs/fashion_mnist.py: prior",
          "seed": 0, "steps": 3400, "exported": date,
          "weights": "UNet weights stored as float16",
          "benchmark": {"class_consistency_strength1_guidance2": 0.967,
                        "train_minutes": 25.7}},
      "teacher": {
          "command": "python benchmarks/student_fmnist.py --cells teacher",
          "config": "pqd_jax/configs/fashion_mnist.py: teacher",
          "model": f"ConvNet(width={teacher.width}, depth={teacher.depth}, "
                   f"norm={teacher.norm!r})",
          "seed": 0, "steps": 9400, "exported": date,
          "benchmark": {"test_accuracy": 0.9306, "train_minutes": 38.7}},
  }


def main(argv: list[str] | None = None) -> None:
  """Exports the checkpoints named by the flags (defaults: the benchmarks')."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--autoencoder-dir",
                      default="runs/autoencoder_fmnist/final")
  parser.add_argument("--prior-dir",
                      default=os.path.join(BENCH, "prior_fmnist/prior/final"))
  parser.add_argument("--teacher-dir",
                      default=os.path.join(BENCH, "student_fmnist/teacher"))
  args = parser.parse_args(argv)
  provenance = records(time.strftime("%Y-%m-%d"))
  model = teacher_model()
  embedded.export(
      "fashion_mnist", autoencoder_dir=args.autoencoder_dir,
      prior_dir=args.prior_dir,
      teacher_variables=trainer.restore_variables(model, args.teacher_dir,
                                                  (28, 28, 1)),
      records=provenance)
  measured = embedded.slice_metrics("fashion_mnist", model)
  for name, metrics in measured.items():
    provenance[name]["slice_metrics"] = metrics
    embedded.write_provenance("fashion_mnist", name, provenance[name])
  print(measured)


if __name__ == "__main__":
  main()
