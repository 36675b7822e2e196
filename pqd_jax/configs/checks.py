"""The checks a pipeline config passes before any stage runs.

Every field a stage reads is checked here, so that a bad value fails in the
first second instead of after hours of earlier stages: choices, integer and
real ranges, the classifiers' shapes, and the autoencoder's and prior's
architectures through the same builders the stages call (when they are
trained here; a pretrained network brings its own).
"""

import os
from typing import Any

import jax

from pqd_jax import checks, models
from pqd_jax.autoencoder import latents as latents_lib
from pqd_jax.autoencoder import model as autoencoder_model
from pqd_jax.data import class_names, formation, synthetic
from pqd_jax.models import from_torch
from pqd_jax.prior import model as prior_model
from pqd_jax.prior import sample as prior_sample
from pqd_jax.quantization import api as quantize_api
from pqd_jax.quantization import weights as weights_lib
from pqd_jax.stages import choose
from pqd_jax.train import steps as train_steps

__all__ = ["check_config"]

# What check_config accepts, by dotted config path.
_CONFIG_CHOICES = {
    "baseline": ("", "random"),
    "channels": (1, 3),
    "latents.dtype": latents_lib.DTYPES,
    "quantize.method": quantize_api.METHODS + ("stream",),
    "quantize.weights": weights_lib.WEIGHT_SCHEMES,
    "quantize.init": quantize_api.INITS,
    "factor": formation.FACTORS,
    "autoencoder.channels": (1, 3),
    "prior.prompt_synonyms": class_names.SYNONYMS,
    "decode.scheduler": prior_sample.SCHEDULERS,
    "decode.images": ("decoded", "nearest"),
    "decode.choose": choose.CHOICES,
    "teacher.arch": models.ARCHS,
    "teacher.norm": models.NORMS,
    "teacher.stem": models.STEMS,
    "teacher.optimizer": ("adamw", "sgd"),
    "student.arch": models.ARCHS,
    "student.norm": models.NORMS,
    "student.stem": models.STEMS,
    "student.optimizer": ("adamw", "sgd"),
    "student.weights": synthetic.STUDENT_WEIGHTS,
}
_CONFIG_INTEGERS = {  # path: smallest value
    "ipc": 1, "seed": 0, "image_size": 1, "classifier_image_size": 0,
    "input.num_workers": 0, "input.prefetch": 1,
    "quantize.n_init": 1, "quantize.num_iters": 1, "quantize.batch_size": 1,
    "latents.batch_size": 1,
    "decode.num_steps": 1, "decode.batch_size": 1, "decode.vae_batch_size": 1,
    "decode.candidates": 1,
    "autoencoder.image_size": 1, "autoencoder.latent_channels": 1,
    "autoencoder.layers_per_block": 1, "autoencoder.norm_num_groups": 1,
    "autoencoder.num_steps": 1, "autoencoder.batch_size": 1,
    "autoencoder.warmup_steps": 0, "autoencoder.seed": 0,
    "prior.attention_head_dim": 1, "prior.cross_attention_dim": 1,
    "prior.layers_per_block": 1, "prior.num_train_timesteps": 1,
    "prior.num_steps": 1, "prior.batch_size": 1, "prior.warmup_steps": 0,
    "prior.seed": 0,
    "teacher.width": 1, "teacher.depth": 1,
    "teacher.num_steps": 0, "teacher.num_epochs": 0,
    "teacher.batch_size": 1, "teacher.warmup_steps": 0, "teacher.seed": 0,
    "student.width": 1, "student.depth": 1,
    "student.num_steps": 0, "student.num_epochs": 0,
    "student.batch_size": 1, "student.num_seeds": 1, "student.seed": 0,
    "student.eval_points": 0, "student.eval_images": 0,
    "student.grad_accumulation": 1,
}
_CONFIG_REALS = {  # path: (smallest value, whether it must be above it)
    "quantize.tol": (0.0, False),
    "decode.guidance_scale": (0.0, False),
    "student.temperature": (0.0, True),
    "autoencoder.kl_weight": (0.0, False),
    **{f"{section}.learning_rate": (0.0, True)
       for section in ("autoencoder", "prior", "teacher", "student")},
    **{f"{section}.weight_decay": (0.0, False)
       for section in ("autoencoder", "prior", "teacher", "student")},
}
_CONFIG_FRACTIONS = {  # path: whether 1 is allowed
    "test_crop": True,
    "decode.strength": True, "prior.cond_dropout": True,
    "prior.ema_decay": False, "student.warmup_fraction": True,
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
  for path, (minimum, above) in _CONFIG_REALS.items():
    checks.number(f"config.{path}", get(path), minimum=minimum,
                  positive=above)
  for path, closed in _CONFIG_FRACTIONS.items():
    value = checks.number(f"config.{path}", get(path), minimum=0)
    if value > 1 or (value == 1 and not closed):
      raise ValueError(f"config.{path} must be in [0, 1{']' if closed else ')'}"
                       f", got {value!r}.")
  # Resolved here, so that float16 on a TPU backend also fails at start.
  checks.compute_dtype(config.compute_dtype, "config.compute_dtype")
  for section in ("teacher", "student"):
    if not (config[section].num_steps or config[section].num_epochs):
      raise ValueError(
          f"config.{section}.num_steps or config.{section}.num_epochs must "
          "be >= 1, got 0 for both.")
  for path in ("report.sweep_ks", "autoencoder.block_out_channels",
               "prior.block_out_channels"):
    for value in get(path):
      checks.integer(f"each of config.{path}", value)
  _check_classifiers(config)
  _check_generators(config)
  for section in ("autoencoder", "prior"):
    if config[section].from_pt and not checks.torch_available():
      raise ValueError(
          f"config.{section}.from_pt=True converts PyTorch weights, which "
          "needs torch: pip install torch (its CPU build is enough), or "
          "use a checkpoint with Flax weights.")
  file = from_torch.checkpoint_file(config.teacher.checkpoint)
  if file is not None and not os.path.isfile(file):
    raise ValueError(
        f"config.teacher.checkpoint={config.teacher.checkpoint!r}: no such "
        "file (expected torchvision's ResNet-18 state_dict, e.g. "
        "resnet18-f37072fd.pth, or a .safetensors copy).")
  _check_batches_divide(config)


def _check_classifiers(config: Any) -> None:
  """The augmentations; the storage factor and a ConvNet's pools fit."""
  side = config.classifier_image_size or config.image_size
  if side % config.factor:
    raise ValueError(f"config.factor={config.factor} does not divide the "
                     f"classifiers' side of {side} pixels.")
  for section in ("teacher", "student"):
    c = config[section]
    try:
      train_steps.check_aug(train_steps.aug_from_config(c))
    except ValueError as e:
      raise ValueError(f"config.{section}: {e}") from None
    if c.arch == "convnet" and side >> c.depth < 1:
      raise ValueError(
          f"config.{section}.depth={c.depth} halves the {side}-pixel inputs "
          f"{c.depth} times, to nothing; at most {side.bit_length() - 1} "
          "blocks fit.")


def _check_generators(config: Any) -> None:
  """The autoencoder and prior trained here can be built; decode fits."""
  builders = {
      "autoencoder": lambda c: autoencoder_model.build(c),
      "prior": lambda c: (prior_model.build_unet(c, (8, 8, 4)),  # any side
                          prior_model.build_scheduler(c).create_state()),
  }
  for section, build in builders.items():
    if not config[section].pretrained:
      try:
        build(config[section])
      except (ValueError, NotImplementedError) as e:
        raise ValueError(f"config.{section}: {e}") from None
  if (config.decode.candidates > 1 and config.decode.images == "decoded"
      and config.decode.strength == 0):
    raise ValueError(
        f"config.decode.candidates={config.decode.candidates} needs samples "
        "that differ: decode.strength > 0 (img2img noise) or decode.images="
        "'nearest' (real images); with strength 0 every candidate is the "
        "decoded centroid.")
  if (not config.prior.pretrained
      and config.decode.num_steps > config.prior.num_train_timesteps):
    raise ValueError(
        f"config.decode.num_steps={config.decode.num_steps} exceeds the "
        "diffusion's config.prior.num_train_timesteps="
        f"{config.prior.num_train_timesteps}.")


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
  passes = config.student.grad_accumulation
  if (config.student.batch_size // devices) % passes:
    raise ValueError(
        f"config.student.grad_accumulation={passes} does not divide the "
        f"{config.student.batch_size // devices} images of a step on each of "
        f"the {devices} devices (config.student.batch_size="
        f"{config.student.batch_size}).")
