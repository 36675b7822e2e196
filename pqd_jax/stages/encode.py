"""Encode: the autoencoder (trained here or loaded) and the class latents."""

import os

import jax
from jax.typing import DTypeLike

from pqd_jax import checks, embedded, workdir
from pqd_jax.autoencoder import latents as latents_lib
from pqd_jax.autoencoder import model as ae_lib
from pqd_jax.autoencoder import train as ae_train
from pqd_jax.data import splits

__all__ = ["AUTOENCODER", "LATENTS", "autoencoder", "compute_dtype_input",
           "latents", "load_autoencoder"]

AUTOENCODER = workdir.Stage(
    "autoencoder", "encode",
    reads=lambda c: ("image_size", "autoencoder") + embedded.dataset_read(
        c.autoencoder.pretrained),
    splits=("train",), outputs=("final",),
    inputs=lambda c: (embedded.fingerprint(c.autoencoder.pretrained,
                                           c.dataset, "autoencoder"),))


def _latents_reads(config) -> tuple[str, ...]:
  # The seed draws the posterior samples; the posterior mean needs none.
  reads = ("image_size", "latents", "compute_dtype")
  return reads + ("seed",) if config.latents.sample else reads


def compute_dtype_input(config) -> tuple[str, ...]:
  """What ``compute_dtype`` resolves to here ("auto" differs by backend)."""
  return (f"compute_dtype={checks.compute_dtype(config.compute_dtype).name}",)


LATENTS = workdir.Stage(
    "latents", "encode", reads=_latents_reads, splits=("train",),
    outputs=("index.json",),
    check=lambda path, meta: latents_lib.problem(path),
    inputs=compute_dtype_input)


def load_autoencoder(art: workdir.Artefact,
                     dtype: DTypeLike = "float32") -> ae_lib.Autoencoder:
  """The autoencoder of an ``autoencoder`` artefact, computing in ``dtype``."""
  with workdir.advise(workdir.remake(art.path)):
    return ae_lib.load_pretrained(os.path.join(art.path, "final"),
                                  dtype=dtype)


def autoencoder(wd: workdir.Workdir, config,
                data: splits.Splits) -> workdir.Artefact:
  """The autoencoder, trained on the training split or loaded."""

  def make(path, c):
    a = c.autoencoder
    if a.pretrained:
      if a.pretrained == embedded.EMBEDDED:
        ae = embedded.load_autoencoder(c.dataset)
      else:
        advice = (f"check it, or point --config.autoencoder.pretrained (now "
                  f"{a.pretrained!r}) at a complete checkpoint")
        with workdir.advise(advice):
          ae = ae_lib.load_pretrained(a.pretrained,
                                      subfolder=a.get("subfolder") or None,
                                      revision=a.get("revision") or None,
                                      from_pt=a.from_pt)
      with workdir.atomic_directory(os.path.join(path, "final")) as tmp:
        ae_lib.save_pretrained(ae, tmp)
    else:
      ae_train.train_autoencoder(a, data.source("train", c.image_size), path,
                                 progress=wd.progress)

  return wd.run(AUTOENCODER, config, make)


def latents(wd: workdir.Workdir, config, data: splits.Splits,
            ae_art: workdir.Artefact) -> workdir.Artefact:
  """The training split encoded, one file per class (``latents/``)."""
  # The host's input pipeline: the latents are the same whatever it is, so
  # it is read here, outside the stage's view, and no digest covers it.
  workers, prefetch = config.input.num_workers, config.input.prefetch

  def make(path, c):
    latents_lib.encode_source(
        load_autoencoder(ae_art, checks.compute_dtype(c.compute_dtype)),
        data.source("train", c.image_size), path,
        dtype=c.latents.dtype, sample=c.latents.sample,
        rng=jax.random.key(c.seed) if c.latents.sample else None,
        batch_size=c.latents.batch_size * jax.device_count(),
        progress=wd.progress, num_workers=workers, prefetch=prefetch)

  return wd.run(LATENTS, config, make, upstream=(ae_art,))
