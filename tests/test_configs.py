"""Every ``--dataset`` config loads, is locked, and says what it claims."""

import importlib

import pytest

from pqd_jax import main

NAMES = [n for n in main.DATASETS if n != "folder"]


def _config(name):
  return importlib.import_module(f"pqd_jax.configs.{name}").get_config()


@pytest.mark.parametrize("name", NAMES)
def test_config_loads_with_the_fields_the_pipeline_reads(name):
  c = _config(name)
  reference = _config("fashion_mnist")
  assert set(c.keys()) == set(reference.keys())
  for section in ("autoencoder", "quantize", "prior", "decode", "teacher",
                  "student", "report"):
    assert set(c[section].keys()) == set(reference[section].keys()), section


@pytest.mark.parametrize("name", NAMES)
def test_a_typo_in_a_locked_config_is_an_error(name):
  c = _config(name)
  c.lock()
  with pytest.raises(AttributeError):
    c.ipcc = 3


def test_imagenet2012_is_the_papers_setting():
  c = _config("imagenet2012")
  assert (c.dataset, c.test_split) == ("imagenet2012", "validation")
  assert (c.image_size, c.classifier_image_size, c.channels) == (512, 224, 3)
  assert c.autoencoder.pretrained == c.prior.pretrained
  assert c.autoencoder.subfolder == "vae"
  assert (c.decode.strength, c.decode.guidance_scale,
          c.decode.num_steps) == (0.7, 8.0, 50)
  assert c.prior.negative_prompt == "cartoon, anime, painting"
  for section in (c.teacher, c.student):
    assert (section.arch, section.stem) == ("resnet18", "imagenet")
  assert (c.student.temperature, c.student.num_epochs) == (20.0, 300)


def test_only_fashion_mnist_uses_the_shipped_checkpoints():
  for name in NAMES:
    c = _config(name)
    shipped = {c.autoencoder.pretrained, c.prior.pretrained,
               c.teacher.checkpoint} == {"embedded"}
    assert shipped == (name == "fashion_mnist"), name


@pytest.mark.parametrize("name", ["imagenet2012", "imagenette"])
def test_the_imagenet_configs_run_no_distortion_sweep(name):
  assert tuple(_config(name).report.sweep_ks) == ()
