"""The embedded autoencoder on Fashion-MNIST: PSNR, speed, class content.

PSNR vs training time, encode speed, class information in the latents, and
image grids.

Trains the default config (``pqd_jax/configs/fashion_mnist.py``) from scratch
in ``--workdir`` (resumable: run again to continue), evaluating the test PSNR
on 2,000 test images every ``--eval-every`` steps, then measures:

- the PSNR on the full test split;
- the time to encode all 70,000 images (warm);
- class information: nearest-centroid and 1-NN accuracy of latents vs
  pixels (train → test);
- grids: test reconstructions and decoded per-class mean latents.

  python benchmarks/autoencoder_fmnist.py --workdir runs/autoencoder_fmnist
"""

import argparse
import json
import os
import time

import harness
import numpy as np

from pqd_jax import visualize, workdir
from pqd_jax.autoencoder import model as model_lib
from pqd_jax.autoencoder import train as train_lib
from pqd_jax.configs import fashion_mnist as fmnist_config
from pqd_jax.data import pipeline, sources


def nearest_centroid_accuracy(xtr, ytr, xte, yte):
  cents = np.stack([xtr[ytr == c].mean(0) for c in range(10)])
  d = (xte ** 2).sum(1)[:, None] - 2 * xte @ cents.T + (cents ** 2).sum(1)
  return float(np.mean(d.argmin(1) == yte))


def one_nn_accuracy(xtr, ytr, xte, yte, chunk=1000):
  hits = 0
  tr_sq = (xtr ** 2).sum(1)
  for s in range(0, len(xte), chunk):
    q = xte[s:s + chunk]
    d = tr_sq[None] - 2 * q @ xtr.T
    hits += int(np.sum(ytr[d.argmin(1)] == yte[s:s + chunk]))
  return hits / len(xte)


def main():
  harness.quiet_diffusers()
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="runs/autoencoder_fmnist")
  parser.add_argument("--eval-every", type=int, default=200)
  parser.add_argument("--num-steps", type=int, default=None)
  args = parser.parse_args()
  config = fmnist_config.get_config().autoencoder
  if args.num_steps:
    config.num_steps = args.num_steps
  train_src = sources.open_source("fashion_mnist", "train")
  test_src = sources.open_source("fashion_mnist", "test")
  test_all = pipeline.to_unit_range(test_src.read())
  ae, train_wall = harness.timed(
      train_lib.train_autoencoder, config, train_src, args.workdir,
      test_images=test_all[:2000], eval_every=args.eval_every)

  full_psnr = train_lib.psnr(test_all, train_lib.reconstruct(ae, test_all))
  train_all = pipeline.to_unit_range(train_src.read())
  model_lib.encode(ae, train_all[:512])  # warm up the compiled encoder
  (z_train, z_test), encode_s = harness.timed(
      lambda: (model_lib.encode(ae, train_all), model_lib.encode(ae, test_all)))

  ytr, yte = train_src.labels, test_src.labels
  flat = lambda a: a.reshape(len(a), -1).astype(np.float32)
  probe = {
      "latent_dim": int(np.prod(z_train.shape[1:])),
      "nearest_centroid_latents": nearest_centroid_accuracy(
          flat(z_train), ytr, flat(z_test), yte),
      "nearest_centroid_pixels": nearest_centroid_accuracy(
          flat(train_all), ytr, flat(test_all), yte),
      "one_nn_latents": one_nn_accuracy(flat(z_train), ytr, flat(z_test),
                                        yte),
      "one_nn_pixels": one_nn_accuracy(flat(train_all), ytr, flat(test_all),
                                       yte),
  }
  os.makedirs(harness.RESULTS_DIR, exist_ok=True)
  pick = np.concatenate([np.flatnonzero(yte == c)[:8] for c in range(10)])
  rec = train_lib.reconstruct(ae, test_all[pick])
  both = np.stack([test_all[pick], rec], 1).reshape(-1, 28, 28, 1)
  workdir.save_atomic(
      os.path.join(harness.RESULTS_DIR, "autoencoder_reconstructions.png"),
      visualize.image_grid(both, 10).save)
  means = np.stack([z_train[ytr == c].mean(0) for c in range(10)])
  workdir.save_atomic(
      os.path.join(harness.RESULTS_DIR, "autoencoder_class_means.png"),
      visualize.image_grid(model_lib.decode(ae, means), 1).save)

  curve = workdir.read_jsonl(os.path.join(args.workdir, "metrics.jsonl"))
  summary = {
      "date": time.strftime("%Y-%m-%d"),
      "config": {k: workdir.to_jsonable(config[k])
                 for k in train_lib.CONFIG_KEYS},
      "train_wall_s_this_run": train_wall,
      "curve": [r for r in curve if "test_psnr" in r and "final" not in r],
      "test_psnr_full": full_psnr,
      "encode_70k_s": encode_s,
      "latent_shape": list(z_train.shape[1:]),
      "scaling_factor": ae.scaling_factor,
      **probe,
  }
  workdir.write_json(
      os.path.join(harness.RESULTS_DIR, "autoencoder_fmnist.json"), summary)
  print(json.dumps({k: v for k, v in summary.items() if k != "curve"},
                   indent=2))


if __name__ == "__main__":
  main()
