"""The pipeline's cache recomputes exactly what a change touches.

Each case is a way the cache once went stale or trusted a broken artefact:
the split, the seed of sampled latents, the data itself, damaged files, a
workdir from an earlier version, and a stage reading an undeclared field.
"""

import ast
import inspect
import json
import os
import shutil

import numpy as np
import pytest

from pqd_jax import pipeline, workdir
from pqd_jax.configs.tiny import get_config
from pqd_jax.stages import decode, encode, quantize, relabel, train
from pqd_jax.stages import eval as evaluation
from tests.tiny_folders import write_folder

ENCODED = {"autoencoder", "latents", "quantization", "quantization_sweep"}


def _run(config, path, stages=("encode", "quantize"), log=None):
  return pipeline.run(config, str(path), stages=stages, progress=False,
                      log=log or (lambda line: None))


@pytest.fixture(scope="module")
def encoded_once(tmp_path_factory):
  """The encode and quantize stages run once on a tiny image folder."""
  tmp = tmp_path_factory.mktemp("encoded")
  root = write_folder(str(tmp / "data"))
  assert set(_run(get_config(root), tmp / "run").seconds) == ENCODED
  return tmp


@pytest.fixture
def encoded(encoded_once, tmp_path):
  """A copy of the data and of the workdir, which the test may change.

  The data's fingerprint covers its files' names, sizes and times, not where
  it is: the copy's artefacts are all cached.
  """
  root = shutil.copytree(encoded_once / "data", tmp_path / "data")
  path = shutil.copytree(encoded_once / "run", tmp_path / "run")
  assert _run(get_config(str(root)), path).seconds == {}
  return str(root), path


@pytest.fixture
def data_root(tmp_path):
  return write_folder(str(tmp_path / "data"))


def test_another_train_split_recomputes_the_latent_artefacts(encoded):
  root, path = encoded
  config = get_config(root)
  config.train_split = "test"
  assert set(_run(config, path).seconds) == ENCODED


def test_a_new_seed_draws_new_latent_samples(encoded):
  root, path = encoded
  config = get_config(root)
  config.latents.sample = True
  assert set(_run(config, path).seconds) == ENCODED - {"autoencoder"}
  config.seed = 1
  assert set(_run(config, path).seconds) == ENCODED - {"autoencoder"}


def test_a_new_seed_keeps_posterior_mean_latents(encoded):
  root, path = encoded
  config = get_config(root)
  config.seed = 1
  assert set(_run(config, path).seconds) == {"quantization",
                                             "quantization_sweep"}


def test_overwritten_training_images_recompute_from_the_autoencoder(encoded):
  root, path = encoded
  image = os.path.join(root, "train", "bar", "0.png")
  shutil.copyfile(os.path.join(root, "train", "left", "0.png"), image)
  assert set(_run(get_config(root), path).seconds) == ENCODED


def test_a_new_class_folder_recomputes_from_the_autoencoder(encoded):
  root, path = encoded
  for split in ("train", "test"):  # a class both splits hold
    shutil.copytree(os.path.join(root, split, "bar"),
                    os.path.join(root, split, "column"))
  assert set(_run(get_config(root), path).seconds) == ENCODED
  with open(path / "latents" / "index.json") as f:
    assert len(json.load(f)["counts"]) == 4


def test_another_train_split_redraws_the_random_baseline(data_root, tmp_path):
  config = get_config(data_root)
  config.baseline = "random"
  _run(config, tmp_path, stages=("decode",))
  config.train_split = "test"
  assert set(_run(config, tmp_path, stages=("decode",)).seconds) == {
      "synthetic"}


def test_a_truncated_quantization_is_made_again(encoded):
  root, path = encoded
  npz = path / "quantization" / "quantization.npz"
  with np.load(npz) as q:
    before = dict(q)
  npz.write_bytes(npz.read_bytes()[:100])
  lines = []
  result = _run(get_config(root), path, log=lines.append)
  assert set(result.seconds) == {"quantization"}
  assert any("incomplete" in line and "moved aside" in line for line in lines)
  with np.load(npz) as q:
    for name, value in before.items():
      np.testing.assert_array_equal(q[name], value)


def test_an_empty_stage_file_is_made_again(encoded):
  root, path = encoded
  (path / "latents" / "stage.json").write_text("")
  result = _run(get_config(root), path)
  assert "latents" in result.seconds and "autoencoder" in result.skipped


def test_an_artefact_of_an_earlier_version_is_moved_aside(encoded):
  root, path = encoded
  (path / "quantization" / "stage.json").write_text('{"hash": "0123abcd"}')
  lines = []
  result = _run(get_config(root), path, log=lines.append)
  assert set(result.seconds) == {"quantization"}
  assert any("earlier version" in line for line in lines)
  assert (path / "quantization.0123abcd" / "quantization.npz").exists()


def test_a_stage_that_reads_an_undeclared_field_fails(data_root, tmp_path,
                                                      monkeypatch):
  stage = quantize.QUANTIZATION._replace(reads=("quantize", "seed"))
  monkeypatch.setattr(quantize, "QUANTIZATION", stage)
  with pytest.raises(workdir.UndeclaredConfigRead, match="config.ipc"):
    _run(get_config(data_root), tmp_path)


@pytest.mark.parametrize("module", [encode, quantize, decode, relabel, train,
                                    evaluation])
def test_a_stage_makes_its_artefact_from_its_config_view_only(module):
  # The view raises on an undeclared read; the whole config must not reach
  # a ``make`` through its closure either.
  tree = ast.parse(inspect.getsource(module))
  makes = [f for f in ast.walk(tree)
           if isinstance(f, ast.FunctionDef) and f.name == "make"]
  assert makes
  for make in makes:
    names = {n.id for n in ast.walk(make) if isinstance(n, ast.Name)}
    assert "config" not in names, f"{module.__name__}: make reads config"


def test_a_cut_latent_class_file_is_made_again(encoded):
  root, path = encoded
  npy = path / "latents" / "class_00001.npy"
  npy.write_bytes(npy.read_bytes()[:200])
  lines = []
  result = _run(get_config(root), path, log=lines.append)
  assert "latents" in result.seconds and "autoencoder" in result.skipped
  assert any("class_00001.npy" in line for line in lines)


def test_a_changed_autoencoder_checkpoint_recomputes_what_used_it(encoded):
  root, path = encoded
  checkpoint = shutil.copytree(path / "autoencoder" / "final",
                               path.parent / "checkpoint")
  config = get_config(root)
  config.autoencoder.pretrained = str(checkpoint)
  assert {"autoencoder", "latents"} <= set(_run(config, path).seconds)
  assert _run(config, path).seconds == {}
  (checkpoint / "config.json").write_text(
      (checkpoint / "config.json").read_text() + " ")  # a retrained model
  assert {"autoencoder", "latents"} <= set(_run(config, path).seconds)
