"""decode.candidates / decode.choose on the tiny pipeline: the kept image of
each centroid is the best of its candidates, recomputed here."""

import os
import shutil

import jax
import numpy as np
import pytest

from pqd_jax import pipeline, workdir
from pqd_jax import prior as prior_lib
from pqd_jax.autoencoder import latents as latents_lib
from pqd_jax.autoencoder import model as ae_lib
from pqd_jax.configs.checks import check_config
from pqd_jax.configs.tiny import get_config
from pqd_jax.data import splits, synthetic
from pqd_jax.quantization import metrics
from pqd_jax.stages import choose, relabel
from tests.tiny_folders import write_folder

UP_TO_RELABEL = ("encode", "quantize", "decode", "relabel")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  return write_folder(str(tmp_path_factory.mktemp("folder")))


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory):
  """A workdir with the autoencoder, latents, prior and teacher made."""
  path = str(tmp_path_factory.mktemp("trained"))
  pipeline.run(_config(data_root, "decoded", "teacher", 1), path,
               stages=UP_TO_RELABEL, progress=False, log=lambda line: None)
  return path


def _run(config, trained, tmp_path):
  """The pipeline up to relabel on a copy of ``trained``: the set's stage."""
  path = tmp_path / "run"
  shutil.copytree(trained, path)
  pipeline.run(config, str(path), stages=UP_TO_RELABEL, progress=False,
               log=lambda line: None)
  return path


def _config(data_root, images, choice, candidates):
  config = get_config(data_root)
  config.report.sweep_ks = ()
  config.decode.images = images
  config.decode.candidates, config.decode.choose = candidates, choice
  return config


def _stored(path):
  images, labels, _ = synthetic.load_set(os.path.join(path, "synthetic"))
  return synthetic.to_uint8(images.take(np.arange(len(labels)))), labels


def _quantization(path):
  with np.load(os.path.join(path, "quantization", "quantization.npz")) as q:
    return q["centroids"], q["counts"], q["classes"]


def _teacher(path):
  return relabel.load_teacher(
      workdir.Artefact(os.path.join(path, "teacher"), ""), 3)


@pytest.mark.parametrize("choice", choose.CHOICES)
def test_a_nearest_set_keeps_the_best_of_the_nearest_images(
    data_root, trained, tmp_path, choice):
  config = _config(data_root, "nearest", choice, 3)
  tmp_path = _run(config, trained, tmp_path)
  z, y = latents_lib.load(str(tmp_path / "latents"))
  cents, _, classes = _quantization(str(tmp_path))
  train = splits.Splits(config).source("train")
  stored, labels = _stored(str(tmp_path))
  for i, c in enumerate(classes):
    zc, members = z[y == c], np.flatnonzero(train.labels == c)
    cand = metrics.nearest_points(zc, cents[i], 3)  # [k, 3]
    images = train.read(members[cand.reshape(-1)])
    if choice == "teacher":
      scores = choose.teacher_scores(_teacher(str(tmp_path)), images,
                                     np.full(len(images), c), 8)
    else:
      flat = zc[cand.reshape(-1)].reshape(cand.size, -1).astype(np.float64)
      scores = np.sum((flat - zc.reshape(len(zc), -1).mean(0)) ** 2, 1)
    scores = scores.reshape(cand.shape)
    best = images.reshape(*cand.shape, *images.shape[1:])[
        np.arange(len(cand)), np.argmax(scores, 1)]
    np.testing.assert_array_equal(stored[labels == c], best)


@pytest.mark.parametrize("choice", choose.CHOICES)
def test_a_decoded_set_keeps_the_best_of_its_samples(data_root, trained,
                                                     tmp_path, choice):
  config = _config(data_root, "decoded", choice, 2)
  tmp_path = _run(config, trained, tmp_path)
  cents, counts, classes = _quantization(str(tmp_path))
  k, d = cents.shape[1], config.decode
  labels = np.repeat(classes, k)
  prior = prior_lib.with_scheduler(prior_lib.load_prior(
      str(tmp_path / "prior" / "final")), d.scheduler)
  ae = ae_lib.load_pretrained(str(tmp_path / "autoencoder" / "final"))
  key = jax.random.key(config.seed)
  flat = cents.reshape(-1, *cents.shape[2:]).astype(np.float32)
  latents = [prior_lib.img2img(
      prior, flat, labels, strength=d.strength,
      guidance_scale=d.guidance_scale, num_steps=d.num_steps,
      rng=jax.random.fold_in(key, j) if j else key) for j in range(2)]
  decoded = [ae_lib.decode(ae, z) for z in latents]
  if choice == "teacher":
    scores = [choose.teacher_scores(_teacher(str(tmp_path)), x, labels, 8)
              for x in decoded]
  else:
    w = counts / counts.sum(1, keepdims=True)
    means = np.einsum("ck,ck...->c...", w, cents.astype(np.float64))
    means = np.repeat(means, k, axis=0)
    scores = [np.sum((z.astype(np.float64) - means) ** 2,
                     axis=tuple(range(1, z.ndim))) for z in latents]
  pick = np.argmax(np.stack(scores, 1), 1)
  expected = synthetic.to_uint8(np.where(
      pick[:, None, None, None] == 1, decoded[1], decoded[0]))
  stored, _ = _stored(str(tmp_path))
  assert 0 < pick.sum() < len(pick)  # both samples are kept somewhere
  np.testing.assert_allclose(stored, expected, atol=1)


def test_candidates_of_a_centroid_decoded_without_noise_are_refused(
    data_root):
  config = _config(data_root, "decoded", "spread", 2)
  config.decode.strength = 0.0
  with pytest.raises(ValueError, match="decode.candidates=2 needs samples"):
    check_config(config)
