"""The shipped checkpoints load and match their recorded slice metrics."""

import os
import re
import shutil

import numpy as np
import pytest

from pqd_jax import embedded, models
from pqd_jax.configs import fashion_mnist as fashion_mnist_config
from pqd_jax.data import fashion_mnist

needs_data = pytest.mark.skipif(
    not os.path.exists(os.path.join(fashion_mnist.DEBIAN_DIR,
                                    "t10k-images-idx3-ubyte.gz")),
    reason="Debian package dataset-fashion-mnist not installed")
REINSTALL = ("the checkpoint shipped with pqd_jax is damaged: reinstall "
             "pqd_jax")


def _teacher():
  return models.build_classifier(fashion_mnist_config.get_config().teacher,
                                 10)


@pytest.fixture(scope="module")
def measured():
  return embedded.slice_metrics("fashion_mnist", _teacher())


@needs_data
@pytest.mark.parametrize("name,tolerance", [
    ("autoencoder", 0.05),  # dB
    ("teacher", 0.002),
    ("prior", 0.03),  # 3 of 100 samples
])
def test_shipped_checkpoint_matches_its_provenance(measured, name,
                                                   tolerance):
  recorded = embedded.provenance("fashion_mnist", name)["slice_metrics"]
  assert recorded.keys() == measured[name].keys()
  for key, value in recorded.items():
    np.testing.assert_allclose(measured[name][key], value, atol=tolerance,
                               err_msg=key)


def test_provenance_names_the_training_command():
  for name in ("autoencoder", "prior", "teacher"):
    record = embedded.provenance("fashion_mnist", name)
    assert record["command"].startswith("python benchmarks/")
    assert {"seed", "steps", "exported", "benchmark"} <= record.keys()


def test_no_embedded_checkpoint_for_other_datasets():
  with pytest.raises(ValueError, match="No embedded prior for dataset "
                                       "'cifar10'"):
    embedded.asset_dir("cifar10", "prior")


def test_the_teacher_must_match_the_model():
  with pytest.raises(ValueError, match="does not match ConvNet"):
    embedded.load_teacher_variables(
        "fashion_mnist", models.ConvNet(num_classes=10, width=64),
        (28, 28, 1))


@pytest.fixture
def damaged(tmp_path, monkeypatch):
  """Cuts a file of a copy of a shipped checkpoint, which then is loaded.

  Returns the file's path as a regular expression.
  """

  def cut(name, file):
    copy = tmp_path / "fashion_mnist" / name
    shutil.copytree(embedded.asset_dir("fashion_mnist", name), copy)
    os.truncate(copy / file, os.path.getsize(copy / file) // 2)
    monkeypatch.setattr(embedded, "_ROOT", str(tmp_path))
    return re.escape(str(copy / file))

  return cut


def test_a_damaged_shipped_teacher_says_reinstall(damaged):
  path = damaged("teacher", "variables.msgpack")
  with pytest.raises(ValueError, match=rf"cannot read {path}: ValueError: "
                     rf"Unpack failed.*; {REINSTALL}"):
    embedded.load_teacher_variables("fashion_mnist", _teacher(), (28, 28, 1))


def test_a_damaged_provenance_says_reinstall(damaged):
  path = damaged("prior", "provenance.json")
  with pytest.raises(ValueError, match=rf"cannot read {path}: "
                     rf"JSONDecodeError.*; {REINSTALL}"):
    embedded.provenance("fashion_mnist", "prior")


@pytest.mark.parametrize("name,file,load", [
    ("autoencoder", "diffusion_flax_model.msgpack", embedded.load_autoencoder),
    ("prior", "context.npz", embedded.load_prior),
])
def test_a_damaged_shipped_model_says_reinstall(damaged, name, file, load):
  path = damaged(name, file)
  with pytest.raises(ValueError, match=rf"cannot read {path}: .*; "
                     f"{REINSTALL}"):
    load("fashion_mnist")
