"""Decode: the latent prior and the synthetic set (or the random baseline)."""

import os

import jax
import numpy as np
from tqdm import tqdm

from pqd_jax import checks, distributed, embedded, sharding, workdir
from pqd_jax.autoencoder import latents as latents_lib
from pqd_jax.autoencoder import model as ae_lib
from pqd_jax.data import class_names as class_names_lib
from pqd_jax.data import pipeline as data_pipeline
from pqd_jax.data import splits, synthetic
from pqd_jax.stages import encode, relabel
from pqd_jax.train import trainer

__all__ = ["PRIOR", "RANDOM", "SYNTHETIC", "nearest_real", "prior",
           "random_subset", "synthetic_set"]

PRIOR = workdir.Stage(
    "prior", "decode",
    reads=lambda c: ("prior",) + embedded.dataset_read(c.prior.pretrained),
    splits=("train",), outputs=("final",),
    inputs=lambda c: (embedded.fingerprint(c.prior.pretrained, c.dataset,
                                           "prior"),))
_SET_FILES = (synthetic.SET, synthetic.SHARDS, "folder", "grid.png")
_SET_CHECK = lambda path, meta: synthetic.problem(path)  # noqa: E731
SYNTHETIC = workdir.Stage("synthetic", "decode",
                          reads=("decode", "seed", "compute_dtype", "factor")
                          + relabel.IMAGE,
                          splits=("train",), outputs=_SET_FILES,
                          check=_SET_CHECK, inputs=encode.compute_dtype_input)
# The baseline: IPC random real images per class; depends on the data only.
RANDOM = workdir.Stage("synthetic", "decode",
                       reads=("ipc", "factor", "seed") + relabel.IMAGE,
                       splits=("train",), outputs=_SET_FILES, check=_SET_CHECK)
# Images decoded at once (a group of whole classes): bounds the host memory
# of the decode stage whatever the number of classes (256 SD images of 512²
# are 0.8 GB of float32); the prior's and the VAE's device batches
# (``decode.batch_size``, ``decode.vae_batch_size`` per device) split it.
GROUP_IMAGES = 256


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
          p.pretrained,
          class_names_lib.readable(class_names, p.prompt_synonyms),
          prompt_template=p.prompt_template,
          negative_prompt=p.negative_prompt, revision=p.revision or None,
          from_pt=p.from_pt,
          memory_efficient_attention=p.memory_efficient_attention)
      prior_lib.save_prior(model, os.path.join(path, "final"))
    else:
      # Lazy: each process reads only its devices' latents of each batch.
      z, y = latents_lib.load(lat_art.path, lazy=True, dtype="float32")
      prior_lib.train_prior(z, y, path, config=p, class_names=class_names,
                            seed=p.seed, progress=wd.progress)

  return wd.run(PRIOR, config, make, upstream=(lat_art,))


def _quantization(q_art: workdir.Artefact):
  """``(weights, classes, centroids layout, advice)`` of a quantization.

  The centroids are a layout (:func:`pqd_jax.workdir.array_layout`): a
  stage reads the rows of the classes it is at.
  """
  q_path = os.path.join(q_art.path, "quantization.npz")
  advice = workdir.remake(q_art.path)
  q = workdir.read_npz(q_path, ("weights", "classes"), advice)
  cents = workdir.array_layout(q_path, "centroids", advice=advice)
  return q["weights"], q["classes"], cents, advice


def _finish(writer: synthetic.SetWriter, classes: np.ndarray,
            weights: np.ndarray, per: int) -> None:
  """Ends a set of the quantizer's ``[C, k]`` weights, ``per`` to a slot."""
  stored = np.repeat(classes, weights.shape[1] // per).astype(np.int32)
  writer.finish(stored, weights.reshape(len(stored), per) if per > 1
                else weights.reshape(-1))


def synthetic_set(wd: workdir.Workdir, config, data: splits.Splits,
                  q_art: workdir.Artefact, ae_art: workdir.Artefact,
                  prior_art: workdir.Artefact | None) -> workdir.Artefact:
  """The centroids decoded: img2img through the prior, then the decoder.

  A group of whole classes at a time (about :data:`GROUP_IMAGES` images):
  its centroids are read from ``quantization.npz``, sampled, decoded, and
  each class written as uint8 at the classifiers' resolution; a killed run
  resumes at the first unfinished group. ``decode.strength = 0`` decodes
  the centroids directly (no prior).
  """
  class_names = data.source("train", None).class_names

  def make(path, c):
    from pqd_jax import prior as prior_lib

    weights, classes, cents, q_advice = _quantization(q_art)
    k = cents.shape[1]  # decoded images per class: ipc · factor²
    per = c.factor * c.factor
    labels = np.repeat(classes, k).astype(np.int32)
    d = c.decode
    mesh = sharding.data_mesh()
    dtype = checks.compute_dtype(c.compute_dtype)
    ae = encode.load_autoencoder(ae_art, dtype)
    ae = ae._replace(params=sharding.replicate(ae.params, mesh))
    model = None
    if d.strength > 0:
      with workdir.advise(workdir.remake(prior_art.path)):
        model = prior_lib.load_prior(os.path.join(prior_art.path, "final"),
                                     dtype=dtype)
      model = prior_lib.with_scheduler(model, d.scheduler)
      model = model._replace(params=sharding.replicate(model.params, mesh))
    writer = synthetic.SetWriter(path, class_names, relabel.image_shape(c),
                                 factor=c.factor)
    group = max(1, GROUP_IMAGES // k)
    starts = range(0, len(classes), group)
    # Process 0's shards decide which groups are left: the sampling and
    # decoding are collective, so every process must run the same groups.
    left = distributed.from_coordinator(lambda: [
        lo for lo in starts if not all(
            writer.finished(classes[i], k // per)
            for i in range(lo, min(lo + group, len(classes))))])
    for lo in tqdm(left, desc="decode", disable=not wd.progress):
      hi = min(lo + group, len(classes))
      z = workdir.read_rows(cents, lo, hi, advice=q_advice).astype(np.float32)
      z = z.reshape(-1, *cents.shape[2:])
      if model is not None:
        z = prior_lib.img2img(
            model, z, labels[lo * k:hi * k], strength=d.strength,
            guidance_scale=d.guidance_scale, num_steps=d.num_steps,
            rng=jax.random.key(c.seed),
            batch_size=d.batch_size * jax.device_count(), mesh=mesh,
            first_index=lo * k)
      images = ae_lib.decode(ae, z, batch_size=d.vae_batch_size
                             * jax.device_count(), mesh=mesh)
      for i in range(lo, hi):
        if not writer.finished(classes[i], k // per):
          writer.write_class(int(classes[i]),
                             images[(i - lo) * k:(i - lo + 1) * k],
                             i * (k // per))
    _finish(writer, classes, weights, per)

  upstream = (q_art, ae_art) + ((prior_art,) if prior_art else ())
  return wd.run(SYNTHETIC, config, make, upstream=upstream)


def nearest_real(wd: workdir.Workdir, config, data: splits.Splits,
                 q_art: workdir.Artefact,
                 lat_art: workdir.Artefact) -> workdir.Artefact:
  """The synthetic set of ``decode.images = "nearest"``: real images.

  Each centroid's image is the training image whose latent is nearest to
  it (:func:`pqd_jax.quantization.metrics.nearest_members`), with the
  centroid's weight: the quantizer's choice and weights without the
  generator. Written as the decoded set is (the same stage), a class at a
  time; a killed run resumes at its first unfinished class.
  """
  from pqd_jax.quantization import metrics

  def make(path, c):
    weights, classes, cents, q_advice = _quantization(q_art)
    k, per = cents.shape[1], c.factor * c.factor
    shape = relabel.image_shape(c)
    src = data.source("train", shape[0] // c.factor)
    members = data_pipeline.class_indices(src)
    writer = synthetic.SetWriter(path, src.class_names, shape,
                                 factor=c.factor)
    for i, label in enumerate(classes):
      if writer.finished(label, k // per):
        continue
      z = np.concatenate([chunk for chunk, _ in latents_lib.stream(
          lat_art.path, classes=[int(label)])()])
      cent = workdir.read_rows(cents, i, i + 1, advice=q_advice)[0]
      rows = metrics.nearest_members(z, cent)
      writer.write_class(int(label), src.read(members[label][rows]),
                         i * (k // per))
    _finish(writer, classes, weights, per)

  return wd.run(SYNTHETIC, config, make, upstream=(q_art, lat_art))


def random_subset(wd: workdir.Workdir, config,
                  data: splits.Splits) -> workdir.Artefact:
  """The ``random`` baseline: IPC real images per class, uniform weights."""

  def make(path, c):
    src = data.source("train", c.image_size)
    per = c.factor * c.factor  # images per stored slot
    idx = trainer.random_subset(src.labels, c.ipc * per, c.seed)
    labels = src.labels[idx].astype(np.int32)
    order = np.argsort(labels, kind="stable")
    idx, labels = idx[order], labels[order]
    shape = relabel.image_shape(c)
    writer = synthetic.SetWriter(path, src.class_names, shape,
                                 factor=c.factor)
    for label in np.unique(labels):
      members = np.flatnonzero(labels == label)
      if writer.finished(label, len(members) // per):
        continue
      images = src.read(idx[members])
      if images.shape[1] != shape[0] // c.factor:
        images = data_pipeline.to_unit_range(images)
      writer.write_class(int(label), images, int(members[0]) // per)
    stored = labels[::per]
    writer.finish(stored, np.ones((len(stored), per) if per > 1
                                  else len(stored), np.float32))

  return wd.run(RANDOM, config, make)
