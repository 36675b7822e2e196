"""One ImageNet class end to end through SD-1's VAE at 512 px on this CPU.

The VAE is the published SD-1 architecture (random weights), so encode and
decode run the computation and memory of an ImageNet run at the config's
per-device batches; the UNet, text encoder and classifiers are tiny.
"""

import json
import os

import numpy as np
import pytest

from pqd_jax import pipeline
from pqd_jax.configs import tiny_imagenet
from pqd_jax.data import synthetic
from tests import tiny_folders

pytest.importorskip("transformers")
from tests import tiny_sd  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  root = tiny_folders.write_imagenet_folder(
      str(tmp_path_factory.mktemp("folder")), per_class=(3, 2), size=512,
      wnids=("n01440764",))
  sd_dir = tiny_sd.write_tiny_sd(str(tmp_path_factory.mktemp("sd")),
                                 with_vae=True, image_size=512, sd1_vae=True)
  workdir = str(tmp_path_factory.mktemp("run"))
  config = tiny_imagenet.get_config(f"{root},{sd_dir}")
  config.image_size = config.autoencoder.image_size = 512
  config.classifier_image_size, config.ipc = 32, 2
  config.report.sweep_ks = ()
  config.latents.batch_size = config.decode.vae_batch_size = 1
  result = pipeline.run(config, workdir, progress=False,
                        log=lambda line: None)
  return workdir, result


def test_the_class_is_encoded_to_sd_latents(finished):
  with open(os.path.join(finished[0], "latents", "index.json")) as f:
    index = json.load(f)
  assert index["counts"] == [3] and index["latent_shape"] == [64, 64, 4]


def test_its_centroids_are_decoded_to_the_classifiers_size(finished):
  images, labels, _ = synthetic.load_set(
      os.path.join(finished[0], "synthetic"))
  assert images.shape == (2, 32, 32, 3)
  np.testing.assert_array_equal(labels, [0, 0])
  assert np.isfinite(images[:]).all()


def test_the_student_is_evaluated(finished):
  assert len(finished[1].accuracies) == 1
