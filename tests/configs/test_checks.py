"""check_config: the input pipeline's fields, batches over the devices."""

import importlib.util

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


@pytest.mark.parametrize("path, value, message", [
    ("teacher.width", 0, "config.teacher.width must be >= 1, got 0"),
    ("student.depth", 0, "config.student.depth must be >= 1, got 0"),
    ("prior.num_steps", 0, "config.prior.num_steps must be >= 1, got 0"),
    ("autoencoder.num_steps", 0,
     "config.autoencoder.num_steps must be >= 1, got 0"),
    ("prior.attention_head_dim", 0,
     "config.prior.attention_head_dim must be >= 1, got 0"),
    ("teacher.warmup_steps", -1,
     "config.teacher.warmup_steps must be >= 0, got -1"),
    ("student.seed", -1, "config.student.seed must be >= 0, got -1"),
    ("student.eval_points", -2,
     "config.student.eval_points must be >= 0, got -2"),
    ("teacher.learning_rate", 0.0,
     "config.teacher.learning_rate must be > 0, got 0.0"),
    ("student.learning_rate", float("nan"),
     "config.student.learning_rate must be finite, got nan"),
    ("prior.weight_decay", -1.0,
     "config.prior.weight_decay must be >= 0.0, got -1.0"),
    ("prior.ema_decay", 1.0, r"config.prior.ema_decay must be in \[0, 1\), "
     "got 1.0"),
    ("student.warmup_fraction", 2.0,
     r"config.student.warmup_fraction must be in \[0, 1\], got 2.0"),
    ("teacher.crop_scale", (0.5, 0.1),
     r"config.teacher: crop_scale must be \(lo, hi\) with 0 < lo <= hi"),
    ("student.norm", "layer", "config.student.norm must be one of "
     r"\('instance', 'batch', 'none'\), got 'layer'"),
    ("teacher.stem", "cifar", "config.teacher.stem must be one of "
     r"\('imagenet', 'small'\), got 'cifar'"),
    ("prior.block_out_channels", (0, 64),
     "each of config.prior.block_out_channels must be >= 1, got 0"),
])
def test_a_bad_network_field_is_named_with_its_value(path, value, message):
  config = fashion_mnist.get_config()
  section, field = path.split(".")
  config[section][field] = value
  with pytest.raises(ValueError, match=message):
    checks.check_config(config)


def test_a_convnet_deeper_than_its_inputs_allow_is_refused():
  config = fashion_mnist.get_config()  # 28-pixel inputs: at most 4 pools
  config.student.depth = 5
  with pytest.raises(ValueError, match=r"config.student.depth=5 halves the "
                     "28-pixel inputs 5 times, to nothing; at most 4"):
    checks.check_config(config)


def _trained_here():
  config = fashion_mnist.get_config()
  config.autoencoder.pretrained = config.prior.pretrained = ""
  return config


@pytest.mark.parametrize("path, value, message", [
    ("autoencoder.norm_num_groups", 3, "config.autoencoder: block_out_channels"
     r" \(16, 32, 32\) must be non-empty multiples of norm_num_groups=3"),
    ("prior.block_out_channels", (48, 64), "config.prior: block_out_channels "
     "must be non-empty multiples of 32"),
    ("prior.prediction_type", "sample", "config.prior: prediction_type must "
     "be 'epsilon' or 'v_prediction'"),
    ("prior.beta_schedule", "cosine", "config.prior: beta_schedule cosine is "
     "not implemented"),
    ("prior.attention", "none", "config.prior: attention must be 'all' or "
     "'low'"),
    ("decode.num_steps", 2000, "config.decode.num_steps=2000 exceeds the "
     "diffusion's config.prior.num_train_timesteps=1000"),
])
def test_a_network_trained_here_is_built_at_the_start(path, value, message):
  config = _trained_here()
  section, field = path.split(".")
  config[section][field] = value
  with pytest.raises(ValueError, match=message):
    checks.check_config(config)


def test_a_pretrained_network_ignores_its_architecture_fields():
  config = fashion_mnist.get_config()  # the embedded autoencoder and prior
  config.autoencoder.norm_num_groups = 3
  config.prior.attention = "none"
  checks.check_config(config)


def test_gradient_accumulation_must_divide_a_devices_batch(monkeypatch):
  monkeypatch.setattr(checks.jax, "device_count", lambda: 4)
  config = imagenet2012.get_config()  # batch 1024 in 4 passes
  checks.check_config(config)
  config.student.grad_accumulation = 3
  with pytest.raises(ValueError, match=r"config.student.grad_accumulation=3 "
                     "does not divide the 256 images of a step on each of "
                     "the 4 devices"):
    checks.check_config(config)


def test_attention_heads_that_do_not_split_the_channels_are_refused():
  config = _trained_here()  # block_out_channels (64, 128)
  config.prior.attention_head_dim = 3
  with pytest.raises(ValueError, match=r"config.prior: attention_head_dim=3 "
                     r"\(the number of attention heads\) must divide"):
    checks.check_config(config)


@pytest.mark.parametrize("section", ["autoencoder", "prior"])
def test_pytorch_weights_without_torch_are_refused_at_the_start(section):
  if importlib.util.find_spec("torch") is not None:
    pytest.skip("torch is installed here")
  config = imagenet2012.get_config()
  config[section].from_pt = True
  with pytest.raises(ValueError, match=rf"config.{section}.from_pt=True "
                     "converts PyTorch weights, which needs torch"):
    checks.check_config(config)


def test_a_storage_factor_must_divide_the_classifiers_side():
  config = fashion_mnist.get_config()  # 28 px
  config.factor = 3
  with pytest.raises(ValueError, match=r"config.factor must be one of "
                     r"\(1, 2\), got 3"):
    checks.check_config(config)
  config.factor, config.image_size = 2, 27
  config.autoencoder.image_size = 27
  with pytest.raises(ValueError, match="config.factor=2 does not divide the "
                     "classifiers' side of 27 pixels"):
    checks.check_config(config)
