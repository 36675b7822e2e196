"""Host memory of the decode and train stages versus the number of classes.

The synthetic set is decoded a class group at a time straight to uint8
shards and students read it a batch at a time, so the peak resident memory
of the decode stage and of student training should not grow with the
number of classes. This measures it: for each class count, a child process
builds a run's upstream artefacts (random centroids ``[C, IPC, 28, 28, 4]``,
a randomly initialised KL autoencoder decoding them to 224² RGB and a tiny
UNet prior), runs the pipeline's decode stage
(:func:`pqd_jax.stages.decode.synthetic_set`: img2img, VAE decode, uint8
shards at the classifiers' 224 px, image folder, grid), then trains a small
student on the set as the train stage does
(:func:`pqd_jax.data.synthetic.load_set` + ``train_student``), and reports
its peak RSS after each part (``ru_maxrss``).

  python benchmarks/synthetic_rss.py --classes=100,1000 --ipc=10

Each finished cell is one line of ``benchmarks/results/synthetic_rss.jsonl``
(skipped on re-run).
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import harness
import numpy as np

RESULTS = os.path.join(os.path.dirname(__file__), "results",
                       "synthetic_rss.jsonl")
LATENT = (28, 28, 4)  # 224 px through three 2x upsamplings


def _peak_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _config(root: str, ipc: int, size: int):
  from pqd_jax.configs import tiny

  c = tiny.get_config(root)
  c.image_size = c.classifier_image_size = size
  c.channels, c.ipc = 3, ipc
  c.autoencoder.update(dict(
      channels=3, image_size=size, block_out_channels=(4, 4, 4, 4),
      latent_channels=LATENT[2], norm_num_groups=4))
  c.prior.update(dict(block_out_channels=(32, 32), attention_head_dim=8,
                      cross_attention_dim=16))
  c.decode.update(dict(strength=0.5, num_steps=2, guidance_scale=2.0,
                       batch_size=64, vae_batch_size=32))
  c.student.update(dict(arch="convnet", width=8, depth=3, num_steps=20,
                        batch_size=100, soft_labels=False))
  return c


def _folder(root: str, classes: int) -> None:
  """An image folder with one 8x8 image per class: the run's class names."""
  from PIL import Image

  for c in range(classes):
    d = os.path.join(root, "train", f"c{c:04d}")
    os.makedirs(d, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), c % 256, np.uint8)).save(
        os.path.join(d, "0.png"))


def child(classes: int, ipc: int, size: int, work: str) -> dict:
  """Decodes and trains one cell in this process; returns its row."""
  import jax

  from pqd_jax import models, workdir
  from pqd_jax import prior as prior_lib
  from pqd_jax.autoencoder import model as ae_lib
  from pqd_jax.data import splits, synthetic
  from pqd_jax.stages import decode
  from pqd_jax.train import trainer

  harness.quiet_diffusers()
  data_root = os.path.join(work, "data")
  _folder(data_root, classes)
  config = _config(data_root, ipc, size)
  data = splits.Splits(config)
  wd = workdir.Workdir(os.path.join(work, "run"),
                       steps=("quantize", "encode", "decode"),
                       fingerprint=data.fingerprint, log=lambda line: None,
                       progress=False)
  rng = np.random.default_rng(0)

  def centroids(path, c):
    workdir.write_npz(
        os.path.join(path, "quantization.npz"),
        centroids=rng.standard_normal((classes, c.ipc, *LATENT)).astype(
            np.float32),
        weights=np.full((classes, c.ipc), 1.0 / c.ipc, np.float32),
        counts=np.ones((classes, c.ipc), np.int32),
        classes=np.arange(classes, dtype=np.int32))

  def autoencoder(path, c):
    ae = ae_lib.init_autoencoder(c.autoencoder, jax.random.key(0))
    ae_lib.save_pretrained(ae, os.path.join(path, "final"))

  def prior(path, c):
    unet = prior_lib.build_unet(c.prior, LATENT)
    table = np.asarray(jax.random.normal(
        jax.random.key(1), (classes + 1, c.prior.cross_attention_dim)))
    prior_lib.save_prior(prior_lib.Prior(
        unet=unet, params=unet.init_weights(jax.random.key(2)),
        scheduler=prior_lib.build_scheduler(c.prior),
        context=table[:classes, None, :], null_context=table[classes][None],
        latent_shape=LATENT, class_names=tuple(f"c{i:04d}"
                                               for i in range(classes))),
        os.path.join(path, "final"))

  arts = [wd.run(workdir.Stage(name, step, reads=reads, outputs=("final",)
                               if name != "quantization" else
                               ("quantization.npz",)), config, make)
          for name, step, reads, make in (
              ("quantization", "quantize", ("ipc",), centroids),
              ("autoencoder", "encode", ("autoencoder",), autoencoder),
              ("prior", "decode", ("prior",), prior))]
  start_mib = _peak_mib()
  t0 = time.perf_counter()
  syn = decode.synthetic_set(wd, config, data, *arts)
  decode_seconds = time.perf_counter() - t0
  decode_mib = _peak_mib()
  images, labels, weights = synthetic.load_set(syn.path)
  t0 = time.perf_counter()
  trainer.train_student(
      models.build_classifier(config.student, classes), images, labels,
      weights, os.path.join(work, "student"), num_classes=classes,
      num_steps=config.student.num_steps,
      batch_size=config.student.batch_size, progress=False)
  return {"classes": classes, "ipc": ipc, "size": size,
          "images": int(len(labels)),
          "set_bytes": int(len(labels) * size * size * 3),
          "start_rss_mib": round(start_mib, 1),
          "decode_rss_mib": round(decode_mib, 1),
          "train_rss_mib": round(_peak_mib(), 1),
          "decode_seconds": round(decode_seconds, 1),
          "train_seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--classes", default="100,1000")
  parser.add_argument("--ipc", type=int, default=10)
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--out", default=RESULTS)
  parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument("--work", default="", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    print(json.dumps(child(args.child, args.ipc, args.size, args.work)))
    return
  try:
    counts = harness.parse_ints(args.classes, "--classes")
  except ValueError as e:
    parser.error(str(e))
  results = harness.Results(args.out, key=("classes", "ipc", "size"))
  for classes in counts:
    if (classes, args.ipc, args.size) in results:
      continue
    work = tempfile.mkdtemp(prefix="synthetic_rss_")
    try:
      proc = subprocess.run(
          [sys.executable, os.path.abspath(__file__), f"--child={classes}",
           f"--ipc={args.ipc}", f"--size={args.size}", f"--work={work}"],
          capture_output=True, text=True, check=False)
    finally:
      shutil.rmtree(work, ignore_errors=True)
    if proc.returncode:
      sys.exit(f"the {classes}-class cell failed:\n{proc.stderr[-3000:]}")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row.update(machine=harness.machine(), date=time.strftime("%Y-%m-%d"))
    results.append(row)
    print(f"{classes:5d} classes x IPC {args.ipc} at {args.size} px "
          f"({row['set_bytes'] / 2**20:.0f} MiB of uint8): peak RSS decode "
          f"{row['decode_rss_mib']:.0f} MiB, decode + train "
          f"{row['train_rss_mib']:.0f} MiB ({row['decode_seconds']:.0f} s + "
          f"{row['train_seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
  main()
