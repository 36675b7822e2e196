"""The checks a pipeline config passes before any stage runs."""

from typing import Any

import jax

from pqd_jax import checks, models
from pqd_jax.autoencoder import latents as latents_lib
from pqd_jax.data import synthetic
from pqd_jax.quantization import api as quantize_api
from pqd_jax.quantization import weights as weights_lib

__all__ = ["check_config"]

# What check_config accepts, by dotted config path.
_CONFIG_CHOICES = {
    "baseline": ("", "random"),
    "channels": (1, 3),
    "latents.dtype": latents_lib.DTYPES,
    "quantize.method": quantize_api.METHODS + ("stream",),
    "quantize.weights": weights_lib.WEIGHT_SCHEMES,
    "quantize.init": quantize_api.INITS,
    "teacher.arch": models.ARCHS,
    "teacher.optimizer": ("adamw", "sgd"),
    "student.arch": models.ARCHS,
    "student.optimizer": ("adamw", "sgd"),
    "student.weights": synthetic.STUDENT_WEIGHTS,
}
_CONFIG_INTEGERS = {  # path: smallest value
    "ipc": 1, "seed": 0, "image_size": 1, "classifier_image_size": 0,
    "input.num_workers": 0, "input.prefetch": 1,
    "quantize.n_init": 1, "quantize.num_iters": 1, "quantize.batch_size": 1,
    "latents.batch_size": 1,
    "decode.num_steps": 1, "decode.batch_size": 1, "decode.vae_batch_size": 1,
    "teacher.num_steps": 0, "teacher.num_epochs": 0,
    "teacher.batch_size": 1, "teacher.seed": 0,
    "student.num_steps": 0, "student.num_epochs": 0,
    "student.batch_size": 1, "student.num_seeds": 1,
}


def check_config(config: Any) -> None:
  """Checks the config fields that would otherwise fail minutes into a run.

  Raises:
    ValueError: naming the first bad field (``config.<path>``), its value
      and what was expected.
  """
  def get(path):
    value = config
    for part in path.split("."):
      value = value[part]
    return value

  for path, choices in _CONFIG_CHOICES.items():
    value = get(path)
    if isinstance(value, bool) or value not in choices:
      raise ValueError(
          f"config.{path} must be one of {choices}, got {value!r}.")
  for path, minimum in _CONFIG_INTEGERS.items():
    checks.integer(f"config.{path}", get(path), minimum=minimum)
  # Resolved here, so that float16 on a TPU backend also fails at start.
  checks.compute_dtype(config.compute_dtype, "config.compute_dtype")
  checks.number("config.quantize.tol", config.quantize.tol, minimum=0)
  strength = checks.number("config.decode.strength", config.decode.strength,
                           minimum=0)
  if strength > 1:
    raise ValueError(
        f"config.decode.strength must be in [0, 1], got {strength!r}.")
  checks.number("config.decode.guidance_scale", config.decode.guidance_scale,
                minimum=0)
  checks.number("config.student.temperature", config.student.temperature,
                positive=True)
  for section in ("teacher", "student"):
    if not (config[section].num_steps or config[section].num_epochs):
      raise ValueError(
          f"config.{section}.num_steps or config.{section}.num_epochs must "
          "be >= 1, got 0 for both.")
  for k in config.report.sweep_ks:
    checks.integer("each of config.report.sweep_ks", k)
  _check_batches_divide(config)


def _check_batches_divide(config: Any) -> None:
  """A training batch is split evenly over every device of every process.

  (The per-device batches of encode and decode are multiplied by the
  device count, so they always divide.)
  """
  devices = jax.device_count()
  for section in ("teacher", "student"):
    batch = config[section].batch_size
    if batch % devices:
      raise ValueError(
          f"config.{section}.batch_size={batch} does not divide over the "
          f"{devices} devices: use a multiple of {devices}, e.g. "
          f"--config.{section}.batch_size={-(-batch // devices) * devices}.")
