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
from pqd_jax.stages import choose, encode, relabel
from pqd_jax.train import trainer

__all__ = ["PRIOR", "RANDOM", "SYNTHETIC", "nearest_real", "needs_teacher",
           "prior", "random_subset", "synthetic_set"]

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
  """``(weights, counts, classes, centroids layout, advice)``.

  The centroids are a layout (:func:`pqd_jax.workdir.array_layout`): a
  stage reads the rows of the classes it is at.
  """
  q_path = os.path.join(q_art.path, "quantization.npz")
  advice = workdir.remake(q_art.path)
  q = workdir.read_npz(q_path, ("weights", "counts", "classes"), advice)
  cents = workdir.array_layout(q_path, "centroids", advice=advice)
  return q["weights"], q["counts"], q["classes"], cents, advice


def _chooser(c, teacher_art: workdir.Artefact | None, num_classes: int):
  """``(candidates, score)`` of ``decode.candidates`` / ``decode.choose``.

  ``score(images, latents, label, class_mean) -> [n]`` rates a class's
  candidates (:mod:`pqd_jax.stages.choose`); None for one candidate.
  """
  m = c.decode.candidates
  if m == 1:
    return 1, None
  if c.decode.choose == "spread":
    return m, lambda images, z, label, mean: choose.spread_scores(z, mean)
  if teacher_art is None:
    raise ValueError("decode.choose='teacher' needs the teacher artefact.")
  teacher = relabel.load_teacher(teacher_art, num_classes)
  size = relabel.image_shape(c)[0]
  return m, lambda images, z, label, mean: choose.teacher_scores(
      teacher, images, np.full(len(images), label), size)


def needs_teacher(config) -> bool:
  """Whether the set's images are chosen by the teacher."""
  return (config.baseline != "random" and config.decode.candidates > 1
          and config.decode.choose == "teacher")


def _finish(writer: synthetic.SetWriter, classes: np.ndarray,
            weights: np.ndarray, per: int) -> None:
  """Ends a set of the quantizer's ``[C, k]`` weights, ``per`` to a slot."""
  stored = np.repeat(classes, weights.shape[1] // per).astype(np.int32)
  writer.finish(stored, weights.reshape(len(stored), per) if per > 1
                else weights.reshape(-1))


def synthetic_set(wd: workdir.Workdir, config, data: splits.Splits,
                  q_art: workdir.Artefact, ae_art: workdir.Artefact,
                  prior_art: workdir.Artefact | None,
                  teacher_art: workdir.Artefact | None = None
                  ) -> workdir.Artefact:
  """The centroids decoded: img2img through the prior, then the decoder.

  A group of whole classes at a time (about :data:`GROUP_IMAGES` images):
  its centroids are read from ``quantization.npz``, sampled, decoded, and
  each class written as uint8 at the classifiers' resolution; a killed run
  resumes at the first unfinished group. ``decode.strength = 0`` decodes
  the centroids directly (no prior). With ``decode.candidates = m > 1``
  each centroid is sampled ``m`` times (the first with the set's own
  noise) and one sample kept (:mod:`pqd_jax.stages.choose`; the teacher
  of ``teacher_art`` for ``decode.choose = "teacher"``).
  """
  class_names = data.source("train", None).class_names

  def make(path, c):
    from pqd_jax import prior as prior_lib

    weights, counts, classes, cents, q_advice = _quantization(q_art)
    m, score = _chooser(c, teacher_art, len(class_names))
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
    group = max(1, GROUP_IMAGES // (k * m))
    starts = range(0, len(classes), group)
    # Process 0's shards decide which groups are left: the sampling and
    # decoding are collective, so every process must run the same groups.
    left = distributed.from_coordinator(lambda: [
        lo for lo in starts if not all(
            writer.finished(classes[i], k // per)
            for i in range(lo, min(lo + group, len(classes))))])
    for lo in tqdm(left, desc="decode", disable=not wd.progress):
      hi = min(lo + group, len(classes))
      cent = workdir.read_rows(cents, lo, hi, advice=q_advice)
      cent = cent.astype(np.float32).reshape(-1, *cents.shape[2:])
      samples = []  # [m] of ([G·k, ...] latents, images)
      for j in range(m):  # candidate 0: the set's own noise
        z = cent
        if model is not None:
          key = jax.random.key(c.seed)
          z = prior_lib.img2img(
              model, cent, labels[lo * k:hi * k], strength=d.strength,
              guidance_scale=d.guidance_scale, num_steps=d.num_steps,
              rng=jax.random.fold_in(key, j) if j else key,
              batch_size=d.batch_size * jax.device_count(), mesh=mesh,
              first_index=lo * k)
        samples.append((z, ae_lib.decode(
            ae, z, batch_size=d.vae_batch_size * jax.device_count(),
            mesh=mesh)))
      for i in range(lo, hi):
        if writer.finished(classes[i], k // per):
          continue
        rows = slice((i - lo) * k, (i - lo + 1) * k)
        images = samples[0][1][rows]
        if score is not None:
          z = np.stack([s[0][rows] for s in samples], 1)  # [k, m, ...]
          cand = np.stack([s[1][rows] for s in samples], 1)
          mean = np.tensordot(counts[i] / counts[i].sum(),
                              cent[rows].astype(np.float64), axes=1)
          scores = score(cand.reshape(-1, *cand.shape[2:]),
                         z.reshape(-1, *z.shape[2:]), int(classes[i]), mean)
          images = cand[np.arange(k), choose.best(scores.reshape(k, m))]
        writer.write_class(int(classes[i]), images, i * (k // per))
    _finish(writer, classes, weights, per)

  upstream = ((q_art, ae_art) + ((prior_art,) if prior_art else ())
              + ((teacher_art,) if teacher_art else ()))
  return wd.run(SYNTHETIC, config, make, upstream=upstream)


def nearest_real(wd: workdir.Workdir, config, data: splits.Splits,
                 q_art: workdir.Artefact, lat_art: workdir.Artefact,
                 teacher_art: workdir.Artefact | None = None
                 ) -> workdir.Artefact:
  """The synthetic set of ``decode.images = "nearest"``: real images.

  Each centroid's image is the training image whose latent is nearest to
  it (:func:`pqd_jax.quantization.metrics.nearest_members`), with the
  centroid's weight: the quantizer's choice and weights without the
  generator. With ``decode.candidates = m > 1`` the ``m`` images nearest
  the centroid are its candidates and one is kept
  (:mod:`pqd_jax.stages.choose`). Written as the decoded set is (the same
  stage), a class at a time; a killed run resumes at its first unfinished
  class.
  """
  from pqd_jax.quantization import metrics

  def make(path, c):
    weights, _, classes, cents, q_advice = _quantization(q_art)
    k, per = cents.shape[1], c.factor * c.factor
    shape = relabel.image_shape(c)
    src = data.source("train", shape[0] // c.factor)
    m, score = _chooser(c, teacher_art, len(src.class_names))
    members = data_pipeline.class_indices(src)
    writer = synthetic.SetWriter(path, src.class_names, shape,
                                 factor=c.factor)
    for i, label in enumerate(classes):
      if writer.finished(label, k // per):
        continue
      z = np.concatenate([chunk for chunk, _ in latents_lib.stream(
          lat_art.path, classes=[int(label)])()])
      cent = workdir.read_rows(cents, i, i + 1, advice=q_advice)[0]
      if score is None:
        rows = metrics.nearest_members(z, cent)
      else:
        cand = metrics.nearest_points(z, cent, min(m, len(z)))  # [k, m']
        flat = cand.reshape(-1)
        scores = score(src.read(members[label][flat]), z[flat], int(label),
                       z.mean(axis=0)).reshape(cand.shape)
        rows = cand[np.arange(k), choose.best(scores)]
      writer.write_class(int(label), src.read(members[label][rows]),
                         i * (k // per))
    _finish(writer, classes, weights, per)

  upstream = (q_art, lat_art) + ((teacher_art,) if teacher_art else ())
  return wd.run(SYNTHETIC, config, make, upstream=upstream)


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
