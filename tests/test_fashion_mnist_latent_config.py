"""configs/fashion_mnist_latent.py: the default config, another latent."""

import pytest

from pqd_jax.configs import fashion_mnist, fashion_mnist_latent


def _load_config_module():
  return fashion_mnist_latent


def test_only_the_latent_channels_and_the_trained_models_differ():
  default = fashion_mnist.get_config().to_dict()
  changed = _load_config_module().get_config("8").to_dict()
  diffs = {(section, key)
           for section, values in default.items() if isinstance(values, dict)
           for key, value in values.items()
           if changed[section][key] != value}
  diffs |= {(key,) for key, value in default.items()
            if not isinstance(value, dict) and changed[key] != value}
  assert diffs == {("autoencoder", "latent_channels"),
                   ("autoencoder", "pretrained"), ("prior", "pretrained")}


def test_the_latent_channels_are_the_argument():
  assert _load_config_module().get_config("2").autoencoder.latent_channels == 2


@pytest.mark.parametrize("bad", ["0", "-1", "eight", "2.5"])
def test_a_bad_channel_count_is_a_value_error_naming_it(bad):
  with pytest.raises(ValueError, match=repr(bad)):
    _load_config_module().get_config(bad)
