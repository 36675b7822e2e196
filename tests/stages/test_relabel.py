"""The teacher stage with torchvision's ResNet-18 (--config.teacher.checkpoint
=torchvision:<file>), on an image folder of two ImageNet classes."""


import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from pqd_jax import models, workdir
from pqd_jax.configs import checks, tiny
from pqd_jax.data import splits
from pqd_jax.models import from_torch
from pqd_jax.stages import relabel
from tests.conftest import load_script
from tests.tiny_folders import write_imagenet_folder

# Sorted folder names: tench (index 0 of ImageNet-1k), great white shark (2).
WNIDS = ("n01484850", "n01440764")


def _random_state_dict():
  return load_script("tools", "torchvision_fixture.py").random_state_dict()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tv") / "resnet18.safetensors")
  save_file(_random_state_dict(), path)
  return path


def _config(root, weights):
  config = tiny.get_config(root)
  config.channels = config.autoencoder.channels = 3
  config.image_size = config.autoencoder.image_size = 16
  config.classifier_image_size = 32
  config.teacher.checkpoint = from_torch.PREFIX + weights
  return config


def _teacher_stage(config, tmp_path):
  data = splits.Splits(config)
  wd = workdir.Workdir(str(tmp_path / "run"), steps=("relabel",),
                       fingerprint=data.fingerprint, log=lambda line: None,
                       progress=False)
  return relabel.teacher(wd, config, data, num_classes=2)


def test_the_teacher_gives_the_imagenet_logits_of_the_dataset_classes(
    tmp_path, weights):
  root = write_imagenet_folder(str(tmp_path / "data"), wnids=WNIDS)
  art = _teacher_stage(_config(root, weights), tmp_path)
  teacher = relabel.load_teacher(art, num_classes=2)
  x = np.asarray(jax.random.uniform(jax.random.key(0), (3, 32, 32, 3),
                                    minval=-1, maxval=1))
  logits = np.asarray(teacher.model.apply(teacher.variables, x))
  full = models.ResNet18(num_classes=1000, torchvision_input=True)
  every = np.asarray(full.apply(from_torch.load_resnet18(weights), x))
  np.testing.assert_allclose(logits, every[:, [0, 2]], rtol=1e-5, atol=1e-6)


def test_classes_that_are_not_imagenet_ids_are_refused(tmp_path, weights):
  from tests.tiny_folders import write_folder

  config = _config(write_folder(str(tmp_path / "data")), weights)
  config.channels = config.autoencoder.channels = 1
  with pytest.raises(ValueError, match=r"are not ImageNet WordNet ids"):
    _teacher_stage(config, tmp_path)


def test_a_missing_file_is_refused_at_the_start(tmp_path):
  config = _config(str(tmp_path), str(tmp_path / "none.pth"))
  with pytest.raises(ValueError, match=r"config.teacher.checkpoint="
                     r"'torchvision:.*none.pth': no such file"):
    checks.check_config(config)
