"""check_config: the input pipeline's fields, batches over the devices."""

import ml_collections
import pytest

from pqd_jax.configs import checks, fashion_mnist, imagenet2012


def test_fashion_mnist_decodes_in_process_and_imagenet_in_workers():
  assert fashion_mnist.get_config().input.num_workers == 0
  assert imagenet2012.get_config().input.num_workers >= 8
  for config in (fashion_mnist.get_config(), imagenet2012.get_config()):
    checks.check_config(config)
    assert config.input.prefetch >= 1


@pytest.mark.parametrize("field, value, message", [
    ("num_workers", -1, "config.input.num_workers must be >= 0, got -1"),
    ("num_workers", 2.5, "config.input.num_workers must be an integer, got "
     "2.5"),
    ("prefetch", 0, "config.input.prefetch must be >= 1, got 0"),
])
def test_a_bad_input_field_is_named_with_its_value(field, value, message):
  # Not type-safe, as a config built from a dict or a JSON file.
  config = ml_collections.ConfigDict(fashion_mnist.get_config().to_dict(),
                                     type_safe=False)
  config.input[field] = value
  with pytest.raises(ValueError, match=message):
    checks.check_config(config)


@pytest.mark.parametrize("section", ["teacher", "student"])
def test_a_batch_that_does_not_divide_over_the_devices_says_what_to_use(
    section, monkeypatch):
  monkeypatch.setattr(checks.jax, "device_count", lambda: 8)
  config = fashion_mnist.get_config()
  config.teacher.batch_size = config.student.batch_size = 96
  config[section].batch_size = 100
  with pytest.raises(ValueError, match=(
      rf"config.{section}.batch_size=100 does not divide over the 8 "
      rf"devices: use a multiple of 8, e.g. "
      rf"--config.{section}.batch_size=104")):
    checks.check_config(config)
