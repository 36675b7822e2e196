"""Trained checkpoints shipped with the package for the Fashion-MNIST default.

Training the embedded autoencoder, prior and teacher from scratch takes about
80 minutes on 2 CPU cores, so the package ships them (a few MB under
``pqd_jax/assets/fashion_mnist``): the autoencoder as a diffusers folder, the
prior as a :func:`pqd_jax.prior.save_prior` folder with float16 UNet weights,
the teacher's variables as msgpack. Each has a ``provenance.json`` with the
command that trained it, the seed, the date and metrics measured on a slice
of the test split when it was exported, which the tests re-measure.

A config field set to :data:`EMBEDDED` (``"embedded"``) selects them;
``python -m pqd_jax.main --retrain`` trains everything from scratch instead.
"""

import hashlib
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from pqd_jax import workdir

__all__ = [
    "EMBEDDED",
    "asset_dir",
    "export",
    "load_autoencoder",
    "load_prior",
    "load_teacher_variables",
    "provenance",
    "slice_metrics",
    "write_provenance",
]

EMBEDDED = "embedded"
_ROOT = os.path.join(os.path.dirname(__file__), "assets")
_TEACHER_FILE = "variables.msgpack"
# What to do about a shipped file that is cut short or corrupt.
_REINSTALL = ("the checkpoint shipped with pqd_jax is damaged: reinstall "
              "pqd_jax (in a git checkout: git checkout -- pqd_jax/assets)")


def dataset_read(name: str) -> tuple[str, ...]:
  """``("dataset",)`` when ``name`` is :data:`EMBEDDED`, else ``()``.

  A pipeline stage that loads a shipped checkpoint picks it by
  ``config.dataset``; one that trains or loads another depends on the data
  through its fingerprint, not on the dataset's name or location.
  """
  return ("dataset",) if name == EMBEDDED else ()


def fingerprint(value: str, dataset: str, asset: str) -> str:
  """What a pipeline stage loads when a config field says ``value``.

  The shipped ``asset`` checkpoint's provenance (``value`` =
  :data:`EMBEDDED`), the files under a local path
  (:func:`pqd_jax.workdir.tree_stats`), or ``""`` for a hub id (pinned by
  its revision) and for nothing to load.
  """
  if value == EMBEDDED:
    with open(os.path.join(asset_dir(dataset, asset), "provenance.json"),
              "rb") as f:
      return hashlib.sha256(f.read()).hexdigest()[:16]
  return workdir.tree_stats(value) if value else ""


def asset_dir(dataset: str, name: str) -> str:
  """``pqd_jax/assets/<dataset>/<name>``.

  Raises:
    ValueError: when the package ships no such checkpoint.
  """
  path = os.path.join(_ROOT, dataset, name)
  if not os.path.exists(os.path.join(path, "provenance.json")):
    available = sorted(os.listdir(_ROOT)) if os.path.isdir(_ROOT) else []
    raise ValueError(
        f"No embedded {name} for dataset {dataset!r} (the package ships "
        f"checkpoints for {available}); set the config's pretrained/"
        f"checkpoint field to '' to train one, or to a path.")
  return path


def provenance(dataset: str, name: str) -> dict:
  """The provenance record of an embedded checkpoint."""
  return workdir.load_json(
      os.path.join(asset_dir(dataset, name), "provenance.json"), _REINSTALL)


def load_autoencoder(dataset: str):
  """The embedded :class:`~pqd_jax.autoencoder.model.Autoencoder`."""
  from pqd_jax.autoencoder import model as ae_lib

  with workdir.advise(_REINSTALL):
    return ae_lib.load_pretrained(asset_dir(dataset, "autoencoder"))


def load_prior(dataset: str):
  """The embedded prior, parameters cast back to float32."""
  from pqd_jax.prior import model as prior_lib

  with workdir.advise(_REINSTALL):
    prior = prior_lib.load_prior(asset_dir(dataset, "prior"))
  return prior._replace(params=jax.tree.map(
      lambda x: jnp.asarray(x, jnp.float32), prior.params))


def load_teacher_variables(dataset: str, model: Any,
                           image_shape: tuple[int, int, int]) -> dict:
  """The embedded teacher's variables for ``model``.

  Raises:
    ValueError: when they do not match the model, or
      (:class:`pqd_jax.workdir.UnreadableFileError`) the file is cut short
      or corrupt.
  """
  path = os.path.join(asset_dir(dataset, "teacher"), _TEACHER_FILE)
  template = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, *image_shape))))
  template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                          dict(template))
  with workdir.reading(path, _REINSTALL), open(path, "rb") as f:
    state = serialization.msgpack_restore(f.read())
  try:
    variables = serialization.from_state_dict(template, state)
  except (ValueError, KeyError) as e:
    raise ValueError(f"The embedded teacher for {dataset!r} does not match "
                     f"{type(model).__name__}: {e}") from e
  shapes = lambda tree: jax.tree.map(np.shape, tree)
  if shapes(variables) != shapes(template):
    raise ValueError(f"The embedded teacher for {dataset!r} does not match "
                     f"{type(model).__name__}: its variables are "
                     f"{shapes(variables)}, the model's {shapes(template)}.")
  return jax.tree.map(jnp.asarray, variables)


# The fixed test slices and settings of the exported metrics.
PSNR_IMAGES = 1000
TEACHER_IMAGES = 2000
PRIOR_SAMPLES_PER_CLASS = 10
PRIOR_GUIDANCE = 4.0
PRIOR_STEPS = 25


def slice_metrics(dataset: str, teacher: Any) -> dict[str, dict]:
  """Metrics of the embedded checkpoints on fixed slices of the test split.

  Autoencoder: PSNR on the first 1,000 test images; teacher: accuracy on the
  first 2,000; prior: the fraction of 100 pure samples (10 per class,
  guidance 4, 25 DDIM steps, key 0) the embedded teacher assigns to their
  class after decoding.
  """
  from pqd_jax.autoencoder import model as ae_lib
  from pqd_jax.autoencoder import train as ae_train
  from pqd_jax.data import pipeline, sources
  from pqd_jax.prior import sample
  from pqd_jax.train import steps

  test = sources.open_source(dataset, "test")
  x = pipeline.to_unit_range(test.read())
  ae = load_autoencoder(dataset)
  tvars = load_teacher_variables(dataset, teacher, x.shape[1:])
  psnr = ae_train.psnr(x[:PSNR_IMAGES],
                       ae_train.reconstruct(ae, x[:PSNR_IMAGES]))
  pred = steps.predict(teacher, tvars, x[:TEACHER_IMAGES])
  acc = float(np.mean(pred == test.labels[:TEACHER_IMAGES]))
  prior = load_prior(dataset)
  y = np.repeat(np.arange(prior.num_classes),
                PRIOR_SAMPLES_PER_CLASS).astype(np.int32)
  z = sample.img2img(prior, np.zeros((len(y), *prior.latent_shape),
                                     np.float32), y, strength=1.0,
                     guidance_scale=PRIOR_GUIDANCE, num_steps=PRIOR_STEPS,
                     rng=jax.random.key(0))
  consistency = float(np.mean(
      steps.predict(teacher, tvars, ae_lib.decode(ae, z)) == y))
  return {
      "autoencoder": {f"test_psnr_first_{PSNR_IMAGES}": float(psnr)},
      "teacher": {f"test_accuracy_first_{TEACHER_IMAGES}": acc},
      "prior": {"class_consistency_strength1_guidance4_100_samples":
                consistency},
  }


def write_provenance(dataset: str, name: str, record: dict) -> None:
  """Replaces the provenance record of an exported checkpoint."""
  workdir.write_json(
      os.path.join(_ROOT, dataset, name, "provenance.json"), record)


def export(dataset: str, *, autoencoder_dir: str | None = None,
           prior_dir: str | None = None, teacher_variables: Any = None,
           records: dict[str, dict] | None = None) -> None:
  """Writes checkpoints into the package's assets (a maintainer's tool).

  Args:
    dataset: e.g. ``"fashion_mnist"``.
    autoencoder_dir: a ``save_pretrained`` folder to copy.
    prior_dir: a ``save_prior`` folder; its UNet weights are stored as
      float16.
    teacher_variables: the teacher's ``{"params", ...}``.
    records: per name (``"autoencoder"``, ``"prior"``, ``"teacher"``), the
      provenance to write beside it.
  """
  from pqd_jax.prior import model as prior_lib

  records = records or {}
  if autoencoder_dir:
    with workdir.atomic_directory(os.path.join(_ROOT, dataset,
                                          "autoencoder")) as tmp:
      for name in ("config.json", "diffusion_flax_model.msgpack"):
        shutil.copy(os.path.join(autoencoder_dir, name), tmp)
      workdir.write_json(os.path.join(tmp, "provenance.json"),
                           records.get("autoencoder", {}))
  if prior_dir:
    prior = prior_lib.load_prior(prior_dir)
    half = prior._replace(params=jax.tree.map(
        lambda x: np.asarray(x, np.float16), prior.params))
    target = os.path.join(_ROOT, dataset, "prior")
    prior_lib.save_prior(half, target,
                         metadata=prior_lib.read_metadata(prior_dir))
    workdir.write_json(os.path.join(target, "provenance.json"),
                         records.get("prior", {}))
  if teacher_variables is not None:
    teacher_dir = os.path.join(_ROOT, dataset, "teacher")
    with workdir.atomic_directory(teacher_dir) as tmp:
      with open(os.path.join(tmp, _TEACHER_FILE), "wb") as f:
        f.write(serialization.to_bytes(jax.device_get(teacher_variables)))
      workdir.write_json(os.path.join(tmp, "provenance.json"),
                           records.get("teacher", {}))
