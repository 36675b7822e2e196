"""The torchvision ResNet-18 importer against torchvision's own forward pass.

torchvision's logits come from ``tools/torchvision_fixture.py`` (torch is
not a test dependency): its random weights are drawn again here from the
same seed, written as a state_dict file and imported.
"""

import os

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from pqd_jax import models
from pqd_jax.models import from_torch
from tests.conftest import ROOT, load_script

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "torchvision")


@pytest.fixture(scope="module")
def tool():
  return load_script("tools", "torchvision_fixture.py")


@pytest.fixture(scope="module")
def weights_file(tool, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tv") / "resnet18.safetensors")
  save_file(tool.random_state_dict(), path)
  return path


def test_logits_match_torchvision_in_eval_mode(tool, weights_file):
  variables = from_torch.load_resnet18(weights_file)
  model = models.ResNet18(num_classes=1000, torchvision_input=True)
  logits = model.apply(variables, tool.random_images())
  with np.load(os.path.join(FIXTURES, "torchvision_resnet18.npz")) as f:
    expected = f["logits"]
  np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4)


def test_the_variables_have_the_flax_model_structure(tool, weights_file):
  model = models.ResNet18(num_classes=1000)
  init = model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
  loaded = from_torch.load_resnet18(weights_file)
  shapes = lambda tree: jax.tree.map(np.shape, tree)
  assert shapes(loaded) == shapes(jax.tree.map(np.asarray, dict(init)))


def test_pth_files_are_read_without_torch():
  state = from_torch.read_state_dict(
      os.path.join(FIXTURES, "small_state_dict.pth"))
  with np.load(os.path.join(FIXTURES, "small_state_dict.npz")) as f:
    expected = dict(f)
  assert sorted(state) == sorted(expected)
  for key, value in expected.items():
    assert state[key].dtype == value.dtype, key
    np.testing.assert_array_equal(state[key], value)


def test_a_nested_data_parallel_checkpoint_is_unwrapped(tool, tmp_path):
  state = {f"module.{k}": v for k, v in tool.random_state_dict().items()}
  path = str(tmp_path / "ckpt.safetensors")
  save_file(state, path)
  assert "conv1.weight" in from_torch.read_state_dict(path)


class TestBadFiles:

  def _write(self, tmp_path, state):
    path = str(tmp_path / "bad.safetensors")
    save_file(state, path)
    return path

  def test_a_missing_key_is_named(self, tool, tmp_path):
    state = tool.random_state_dict()
    del state["layer3.1.bn2.running_var"]
    with pytest.raises(ValueError, match=r"bad.safetensors has no "
                       r"'layer3.1.bn2.running_var'"):
      from_torch.load_resnet18(self._write(tmp_path, state))

  def test_a_wrong_shape_is_named(self, tool, tmp_path):
    state = tool.random_state_dict()
    state["layer2.0.conv1.weight"] = np.zeros((128, 32, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"'layer2.0.conv1.weight' has shape "
                       r"\(128, 32, 3, 3\), expected \(128, 64, 3, 3\)"):
      from_torch.load_resnet18(self._write(tmp_path, state))

  def test_a_resnet50_is_named(self, tool, tmp_path):
    state = tool.random_state_dict()
    state["layer1.0.conv3.weight"] = np.zeros((256, 64, 1, 1), np.float32)
    with pytest.raises(ValueError, match="bottleneck blocks"):
      from_torch.load_resnet18(self._write(tmp_path, state))

  def test_a_truncated_pth_is_named(self, tmp_path):
    with open(os.path.join(FIXTURES, "small_state_dict.pth"), "rb") as f:
      data = f.read()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read .*cut.pth"):
      from_torch.read_state_dict(str(path))

  def test_a_missing_file_is_named(self, tmp_path):
    with pytest.raises(ValueError, match=r"no such file: .*none.pth"):
      from_torch.read_state_dict(str(tmp_path / "none.pth"))
