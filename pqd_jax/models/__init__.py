"""Flax linen classifiers: the distillation ConvNet and ResNet-18."""

from typing import Any, get_args

from pqd_jax.models import convnet, resnet
from pqd_jax.models.convnet import ConvNet
from pqd_jax.models.resnet import ResNet, ResNet18

__all__ = ["ARCHS", "NORMS", "STEMS", "ConvNet", "ResNet", "ResNet18",
           "build_classifier"]

ARCHS = ("convnet", "resnet18")
NORMS = get_args(convnet.Norm)  # the ConvNet's
STEMS = get_args(resnet.Stem)  # ResNet-18's


def build_classifier(config: Any, num_classes: int) -> ConvNet | ResNet:
  """The classifier a teacher or student config section names.

  Args:
    config: a ``teacher`` or ``student`` section: ``arch`` (one of
      :data:`ARCHS`), ``width``, ``depth`` and ``norm`` (ConvNet), ``stem``
      (ResNet-18).
    num_classes: outputs.

  Raises:
    ValueError: for an unknown architecture.
  """
  if config.arch == "convnet":
    return ConvNet(num_classes=num_classes, width=config.width,
                   depth=config.depth, norm=config.norm)
  if config.arch == "resnet18":
    return ResNet18(num_classes=num_classes, stem=config.stem)
  raise ValueError(f"Unknown arch {config.arch!r}; expected one of {ARCHS}.")
