"""Decode: the latent prior and the synthetic set (or the random baseline)."""

import os

import jax
import numpy as np

from pqd_jax import embedded, workdir
from pqd_jax.autoencoder import latents as latents_lib
from pqd_jax.autoencoder import model as ae_lib
from pqd_jax.data import class_names as class_names_lib
from pqd_jax.data import pipeline as data_pipeline
from pqd_jax.data import splits, synthetic
from pqd_jax.stages import encode
from pqd_jax.train import trainer

__all__ = ["PRIOR", "RANDOM", "SYNTHETIC", "prior", "random_subset",
           "synthetic_set"]

PRIOR = workdir.Stage(
    "prior", "decode",
    reads=lambda c: ("prior",) + embedded.dataset_read(c.prior.pretrained),
    splits=("train",), outputs=("final",),
    inputs=lambda c: (embedded.fingerprint(c.prior.pretrained, c.dataset,
                                           "prior"),))
_SET_FILES = (synthetic.IMAGES, "folder", "grid.png")
SYNTHETIC = workdir.Stage("synthetic", "decode", reads=("decode", "seed"),
                          splits=("train",), outputs=_SET_FILES)
# The baseline: IPC random real images per class; depends on the data only.
RANDOM = workdir.Stage("synthetic", "decode",
                       reads=("ipc", "seed", "image_size"), splits=("train",),
                       outputs=_SET_FILES)


def prior(wd: workdir.Workdir, config, data: splits.Splits,
          lat_art: workdir.Artefact) -> workdir.Artefact:
  """The latent diffusion prior: trained on the latents, or loaded."""
  from pqd_jax import prior as prior_lib

  class_names = data.source("train", None).class_names

  def make(path, c):
    p = c.prior
    if p.pretrained == embedded.EMBEDDED:
      prior_lib.save_prior(embedded.load_prior(c.dataset),
                           os.path.join(path, "final"))
    elif p.pretrained:
      from pqd_jax.prior import stable_diffusion

      model = stable_diffusion.load_stable_diffusion(
          p.pretrained, class_names_lib.readable(class_names),
          prompt_template=p.prompt_template,
          negative_prompt=p.negative_prompt, revision=p.revision or None,
          memory_efficient_attention=p.memory_efficient_attention)
      prior_lib.save_prior(model, os.path.join(path, "final"))
    else:
      # Lazy: each process reads only its devices' latents of each batch.
      z, y = latents_lib.load(lat_art.path, lazy=True, dtype="float32")
      prior_lib.train_prior(z, y, path, config=p, class_names=class_names,
                            seed=p.seed, progress=wd.progress)

  return wd.run(PRIOR, config, make, upstream=(lat_art,))


def synthetic_set(wd: workdir.Workdir, config, data: splits.Splits,
                  q_art: workdir.Artefact, ae_art: workdir.Artefact,
                  prior_art: workdir.Artefact | None) -> workdir.Artefact:
  """The centroids decoded: img2img through the prior, then the decoder.

  ``decode.strength = 0`` decodes the centroids directly (no prior).
  """
  class_names = data.source("train", None).class_names

  def make(path, c):
    from pqd_jax import prior as prior_lib

    with np.load(os.path.join(q_art.path, "quantization.npz")) as q:
      cents, weights, classes = q["centroids"], q["weights"], q["classes"]
    k = cents.shape[1]
    labels = np.repeat(classes, k).astype(np.int32)
    z = cents.reshape(-1, *cents.shape[2:])
    d = c.decode
    if d.strength > 0:
      model = prior_lib.load_prior(os.path.join(prior_art.path, "final"))
      z = prior_lib.img2img(
          model, z, labels, strength=d.strength,
          guidance_scale=d.guidance_scale, num_steps=d.num_steps,
          rng=jax.random.key(c.seed),
          batch_size=d.batch_size * jax.device_count())
    ae = encode.load_autoencoder(ae_art)
    images = ae_lib.decode(ae, z,
                           batch_size=d.vae_batch_size * jax.device_count())
    images = np.clip(images, -1.0, 1.0).astype(np.float32)
    synthetic.save_set(path, images, labels,
                       weights.reshape(-1).astype(np.float32), class_names)

  upstream = (q_art, ae_art) + ((prior_art,) if prior_art else ())
  return wd.run(SYNTHETIC, config, make, upstream=upstream)


def random_subset(wd: workdir.Workdir, config,
                  data: splits.Splits) -> workdir.Artefact:
  """The ``random`` baseline: IPC real images per class, uniform weights."""

  def make(path, c):
    src = data.source("train", c.image_size)
    idx = trainer.random_subset(src.labels, c.ipc, c.seed)
    images = data_pipeline.to_unit_range(src.read(idx)).astype(np.float32)
    labels = src.labels[idx].astype(np.int32)
    order = np.argsort(labels, kind="stable")
    synthetic.save_set(path, images[order], labels[order],
                       np.ones(len(idx), np.float32), src.class_names)

  return wd.run(RANDOM, config, make)

