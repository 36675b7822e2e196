"""The diffusion prior on Fashion-MNIST latents: speed, class consistency, fit.

Cells, each appended to ``benchmarks/results/prior_fmnist.jsonl`` when done
and skipped on a re-run (training resumes from orbax checkpoints in
``--workdir``, so a cell can span sessions):

- ``throughput``: training latents/s (batch 128) and sampling UNet
  forwards/s of a few UNet sizes on the 7x7x4 latents (run as 8x8);
- ``train``: the default prior (``pqd_jax/configs/fashion_mnist.py``, prior
  section) with the class consistency of 200 pure samples (strength 1)
  every ``--eval-every`` steps: the consistency-versus-time curve;
- ``centroid_guidance``: class consistency of img2img (strength 0.7) of the
  500 centroids at guidance 1/2/4/8;
- ``final``: class consistency of 1,000 pure samples at guidance 1/2/4; of
  img2img at strength 0.7 from the 500 centroids of ``quantize`` (k = 50 per
  class) and its time; the Sinkhorn divergence per class between generated
  and real latents next to the divergence between two halves of the real
  latents; a grid PNG (per class: the decoded centroid, img2img at strength
  0.3/0.5/0.7, the real image of its Voronoi cell nearest the centroid).

Class consistency: the fraction of decoded samples the ConvNet teacher of
``benchmarks/student_fmnist.py`` (93.1%) classifies as their class.

  python benchmarks/student_fmnist.py --cells teacher   # the classifier
  python benchmarks/prior_fmnist.py
"""

import argparse
import json
import os
import time

import harness
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import pqd_jax
from pqd_jax import prior, visualize, workdir
from pqd_jax.autoencoder import latents as latents_lib
from pqd_jax.autoencoder import model as ae_lib
from pqd_jax.autoencoder import train as ae_train
from pqd_jax.configs import fashion_mnist as fmnist_config
from pqd_jax.data import pipeline, sources
from pqd_jax.prior import sample as sample_lib
from pqd_jax.prior import train as prior_train
from pqd_jax.quantization import metrics
from pqd_jax.train import steps

RESULTS = os.path.join(harness.RESULTS_DIR, "prior_fmnist.jsonl")
GRID = os.path.join(harness.RESULTS_DIR, "prior_fmnist_grid.png")
DEFAULT_WORKDIR = os.path.join(harness.CACHE_DIR, "prior_fmnist")


def _measure(config, channels, x, y):
  """Train latents/s and sampling forwards/s of one UNet size."""
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.block_out_channels = channels
  unet = prior.build_unet(cfg, (7, 7, 4))
  scheduler = prior.build_scheduler(cfg)
  params = {"unet": unet.init_weights(jax.random.key(0)),
            "class_embedding": jnp.zeros((11, cfg.cross_attention_dim))}
  tx = optax.adamw(1e-3)
  state = prior_train.PriorState(
      step=jnp.zeros((), jnp.int32), params=params,
      ema_params=jax.tree.map(jnp.copy, params), opt_state=tx.init(params))
  step = lambda s, i: prior_train.train_step(
      s, {"latent": x, "label": y}, jax.random.key(i), unet=unet,
      scheduler=scheduler, tx=tx, num_classes=10, cond_dropout=0.1,
      ema_decay=0.999)
  state, seconds = harness.time_steps(lambda s, i: step(s, i)[0], state, 10)
  train_rate = 10 * x.shape[0] / seconds
  d = cfg.cross_attention_dim
  fwd = jax.jit(lambda p, xx: sample_lib.guided_prediction(
      unet, p, xx, jnp.full((xx.shape[0],), 500),
      jnp.zeros((xx.shape[0], 1, d)), jnp.zeros((1, d)), 2.0))
  xs = jnp.concatenate([x, x])
  timing = harness.time_calls(lambda: fwd(state.params["unet"], xs), 5)
  fwd_rate = 5 * 2 * xs.shape[0] / sum(timing.times)
  return {"params_m": sum(v.size for v in jax.tree.leaves(params["unet"]))
                      / 1e6,
          "train_latents_per_s": train_rate,
          "sample_forwards_per_s": fwd_rate}


def throughput(config, z):
  """:func:`_measure` for a few UNet sizes, batch 128."""
  x = jnp.asarray(np.transpose(np.pad(z[:128], ((0, 0), (0, 1), (0, 1),
                                                (0, 0))), (0, 3, 1, 2)))
  y = jnp.arange(128) % 10
  return {"_".join(map(str, ch)): _measure(config, ch, x, y)
          for ch in ((32, 64), (64, 128), (64, 128, 128))}


class Judge:
  """Decodes latents and classifies them with the teacher."""

  def __init__(self, ae, teacher, teacher_vars):
    self.ae, self.teacher, self.vars = ae, teacher, teacher_vars

  def predict(self, z):
    """The teacher's classes of the decoded latents."""
    images = ae_lib.decode(self.ae, z)
    return np.asarray(steps.predict(self.teacher, self.vars, images))

  def consistency(self, z, y):
    """The fraction of latents whose decoded image is classified as ``y``."""
    return float(np.mean(self.predict(z) == y))


def centroids(z, y, k=50):
  """``quantize``'s centroids, ``k`` per class (a distilled set of IPC k)."""
  q = pqd_jax.quantize(z, y, k, rng=jax.random.key(0))
  return (np.asarray(q.centroids).reshape(-1, *z.shape[1:]),
          np.repeat(np.asarray(q.classes), k).astype(np.int32))


def pure_samples(p, n_per_class, guidance, seed, num_steps):
  y = np.repeat(np.arange(p.num_classes), n_per_class).astype(np.int32)
  z0 = np.zeros((len(y), *p.latent_shape), np.float32)
  return prior.img2img(p, z0, y, strength=1.0, guidance_scale=guidance,
                       num_steps=num_steps, rng=jax.random.key(seed)), y


def main():
  harness.quiet_diffusers()
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cells", default="all")
  parser.add_argument("--workdir", default=DEFAULT_WORKDIR)
  parser.add_argument("--autoencoder-dir", default="runs/autoencoder_fmnist")
  parser.add_argument("--teacher-dir", default=harness.TEACHER_DIR)
  parser.add_argument("--num-steps", type=int, default=None,
                      help="prior training steps (default: the config's)")
  parser.add_argument("--eval-every", type=int, default=1000)
  parser.add_argument("--guidance", type=float, default=2.0,
                      help="guidance of the train and final cells (the "
                      "recorded runs used 2; the pipeline default is 4)")
  parser.add_argument("--out", default=RESULTS)
  args = parser.parse_args()
  results = harness.Results(args.out, cells=args.cells)

  config = fmnist_config.get_config()
  if args.num_steps:
    config.prior.num_steps = args.num_steps
  train_src = sources.open_source("fashion_mnist", "train")
  ae = ae_train.train_autoencoder(config.autoencoder, train_src,
                                  args.autoencoder_dir)
  latent_dir = os.path.join(args.workdir, "latents_train")
  if not latents_lib.exists(latent_dir):
    latents_lib.encode_source(ae, train_src, latent_dir, dtype="float32")
  z, y = latents_lib.load(latent_dir)
  z = z.astype(np.float32)

  if results.todo("throughput"):
    results.append({"cell": "throughput", "date": time.strftime("%Y-%m-%d"),
                    **throughput(config.prior, z)})
  if results.only("throughput"):
    return

  judge = Judge(ae, *harness.fmnist_teacher(args.teacher_dir))
  steps_ = config.decode.num_steps

  def eval_fn(p):
    zs, ys = pure_samples(p, 20, args.guidance, 0, steps_)
    return {"consistency_strength1": judge.consistency(zs, ys)}

  prior_dir = os.path.join(args.workdir, "prior")
  trained, train_s = harness.timed(
      prior.train_prior, z, y, prior_dir, config=config.prior,
      class_names=train_src.class_names, seed=config.prior.seed,
      eval_fn=eval_fn, eval_every=args.eval_every)
  if results.todo("train"):
    results.append({
        "cell": "train", "date": time.strftime("%Y-%m-%d"),
        "num_steps": config.prior.num_steps,
        "batch_size": config.prior.batch_size,
        "wall_s_this_run": train_s,
        "curve": harness.training_curve(prior_dir, "step", "seconds", "loss",
                                        "consistency_strength1")})

  if results.todo("centroid_guidance"):
    cents, cy = centroids(z, y)
    row = {"cell": "centroid_guidance", "date": time.strftime("%Y-%m-%d"),
           "strength": 0.7, "ddim_steps": steps_}
    for g in (1.0, 2.0, 4.0, 8.0):
      pushed = prior.img2img(trained, cents, cy, strength=0.7,
                             guidance_scale=g, num_steps=steps_,
                             rng=jax.random.key(2))
      row[f"consistency_g{g:g}"] = judge.consistency(pushed, cy)
    results.append(row)
  if not results.todo("final"):
    return
  row = {"cell": "final", "date": time.strftime("%Y-%m-%d"),
         "num_steps": config.prior.num_steps, "ddim_steps": steps_}
  for g in (1.0, 2.0, 4.0):
    zs, ys = pure_samples(trained, 100, g, 1, steps_)
    row[f"consistency_strength1_g{g:g}"] = judge.consistency(zs, ys)
  cents, cy = centroids(z, y)
  row["consistency_centroids_decoded"] = judge.consistency(cents, cy)
  g = args.guidance
  jax.block_until_ready(prior.img2img(
      trained, cents[:8], cy[:8], strength=0.7, guidance_scale=g,
      num_steps=steps_, rng=jax.random.key(2)))  # compile
  pushed, row["img2img_500_centroids_s"] = harness.timed(
      prior.img2img, trained, cents, cy, strength=0.7, guidance_scale=g,
      num_steps=steps_, rng=jax.random.key(2))
  row["consistency_centroids_img2img_s0.7"] = judge.consistency(pushed, cy)
  # Sinkhorn divergence per class (flattened latents, epsilon 10 ≈ 2.5% of
  # the mean squared distance between two latents).
  gen, gy = pure_samples(trained, 200, g, 3, steps_)
  rng = np.random.default_rng(0)
  div_gen, div_real = [], []
  for c in range(10):
    real = z[y == c][rng.permutation(int(np.sum(y == c)))[:400]]
    div_gen.append(metrics.sinkhorn_divergence(gen[gy == c], real[:200],
                                               epsilon=10.0))
    div_real.append(metrics.sinkhorn_divergence(real[200:], real[:200],
                                                epsilon=10.0))
  row["sinkhorn_generated_vs_real"] = div_gen
  row["sinkhorn_real_half_vs_half"] = div_real
  # Grid: per class, decoded centroid, img2img 0.3 / 0.5 / 0.7, nearest real.
  pick = np.arange(10) * 50
  cols = [ae_lib.decode(ae, cents[pick])]
  for s in (0.3, 0.5, 0.7):
    cols.append(ae_lib.decode(ae, prior.img2img(
        trained, cents[pick], cy[pick], strength=s, guidance_scale=g,
        num_steps=steps_, rng=jax.random.key(4))))
  x_train = pipeline.to_unit_range(train_src.read())
  nearest = []
  for c, k in zip(range(10), pick, strict=True):
    members = np.flatnonzero(y == c)
    d = ((z[members] - cents[k]) ** 2).reshape(len(members), -1).sum(1)
    nearest.append(x_train[members[d.argmin()]])
  cols.append(np.stack(nearest))
  grid = visualize.image_grid(np.stack(cols, 1).reshape(-1, 28, 28, 1), 10)
  workdir.save_atomic(GRID, grid.save)
  results.append(row)
  print(json.dumps(row, indent=1))


if __name__ == "__main__":
  main()
