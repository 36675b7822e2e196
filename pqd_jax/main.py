"""Command line entry point: ``python -m pqd_jax.main --dataset=<name>``.

This file is kept short; the work lives in importable libraries. ``--dataset``
selects ``pqd_jax/configs/<name>.py``; any field can be overridden, e.g.
``--config.ipc=50 --config.quantize.weights=sqrt``.
"""

import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")
DATASETS = ("fashion_mnist",)

flags.DEFINE_string("dataset", "fashion_mnist",
                    f"Which configuration to run, one of {DATASETS}.")


def _dataset_from_argv(argv: list[str]) -> str:
  for i, arg in enumerate(argv):
    if arg.startswith("--dataset="):
      return arg.split("=", 1)[1]
    if arg == "--dataset" and i + 1 < len(argv):
      return argv[i + 1]
  return "fashion_mnist"


def quantize_pixels(config) -> None:
  """Quantizes the training pixels per class and prints a summary."""
  import jax
  import numpy as np

  import pqd_jax
  from pqd_jax.data import fashion_mnist

  images, labels = fashion_mnist.load("train", config.data_dir or None)
  x = images.reshape(len(images), -1).astype(np.float32) / 255.0
  q = config.quantize
  print(f"quantize: {len(x)} images of {x.shape[1]} pixels, "
        f"{len(np.unique(labels))} classes, IPC {config.ipc}, "
        f"method={q.method}, weights={q.weights}, devices={jax.device_count()}")
  t0 = time.perf_counter()
  out = pqd_jax.quantize(
      x, labels, config.ipc, method=q.method, weights=q.weights, init=q.init,
      n_init=q.n_init, num_iters=q.num_iters, tol=q.tol,
      batch_size=q.batch_size, rng=jax.random.key(config.seed))
  jax.block_until_ready(out.centroids)
  seconds = time.perf_counter() - t0
  w = np.asarray(out.weights)
  print(f"{'class':<14}{'distortion':>11}{'w min':>8}{'w max':>8}"
        f"{'iters':>7}{'conv':>6}")
  for i, c in enumerate(out.classes):
    print(f"{fashion_mnist.CLASS_NAMES[c]:<14}{float(out.distortion[i]):>11.3f}"
          f"{w[i].min():>8.3f}{w[i].max():>8.3f}{int(out.iterations[i]):>7}"
          f"{str(bool(out.converged[i])):>6}")
  print(f"quantize: {seconds:.2f} s (compile included), mean distortion "
        f"{float(np.mean(out.distortion)):.3f}")


def main(argv: list[str]) -> None:
  """Runs the configured job (absl entry point)."""
  del argv
  config = flags.FLAGS.config
  logging.info("config:\n%s", config)
  quantize_pixels(config)


def run_main() -> None:
  """Console-script entry point (``pqd-jax``)."""
  os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
  dataset = _dataset_from_argv(sys.argv)
  if dataset not in DATASETS:
    sys.exit(f"error: unknown --dataset={dataset!r}; expected one of "
             f"{DATASETS}.")
  config_flags.DEFINE_config_file(
      "config", os.path.join(_CONFIG_DIR, f"{dataset}.py"),
      "Configuration file (chosen by --dataset).", lock_config=True)
  try:
    app.run(main)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  run_main()
