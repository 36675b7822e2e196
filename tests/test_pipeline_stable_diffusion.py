"""The ImageNet config's path end to end on a tiny randomly initialised SD.

SD VAE loaded with ``subfolder="vae"``, SD UNet + CLIP prompts made from
WordNet ids (D4M's synonym lines), PNDM sampling, ResNet-18 teacher and
student (gradient accumulation) at a classifier size (12) other than the
VAE's (16), the test split centre-cropped: the code the paper's setting runs
on a TPU host.
"""

import json
import os

import numpy as np
import pytest

from pqd_jax import pipeline
from pqd_jax.configs import tiny_imagenet
from tests import tiny_folders

CLASSIFIER_SIZE = 12  # tiny_imagenet: the VAE works at 16

pytest.importorskip("transformers")
from tests import tiny_sd  # noqa: E402


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  root = tiny_folders.write_imagenet_folder(
      str(tmp_path_factory.mktemp("folder")))
  sd_dir = tiny_sd.write_tiny_sd(str(tmp_path_factory.mktemp("sd")),
                                 with_vae=True)
  workdir = str(tmp_path_factory.mktemp("run"))
  config = tiny_imagenet.get_config(f"{root},{sd_dir}")
  result = pipeline.run(config, workdir, progress=False,
                        log=lambda line: None)
  return workdir, result


def test_the_sd_prior_prompts_with_d4m_s_synonym_lines(finished):
  with open(os.path.join(finished[0], "prior", "final", "prior.json")) as f:
    assert json.load(f)["class_names"] == ["tench, Tinca tinca",
                                           "goldfish, Carassius auratus"]


def test_synthetic_images_are_at_the_classifiers_size(finished):
  with np.load(os.path.join(finished[0], "synthetic", "set.npz")) as s:
    assert tuple(s["image_shape"]) == (CLASSIFIER_SIZE, CLASSIFIER_SIZE, 3)
    assert len(s["labels"]) == 4
    assert list(s["class_names"]) == ["n01440764", "n01443537"]


def test_resnet18_students_are_trained_and_evaluated(finished):
  workdir, result = finished
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  assert results["test_images"] == 6
  assert len(result.accuracies) == 1
  with open(os.path.join(workdir, "student", "seed0", "stage.json")) as f:
    assert json.load(f)["reads"]["student.stem"] == "imagenet"
