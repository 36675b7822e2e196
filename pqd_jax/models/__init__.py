"""Flax linen classifiers: the distillation ConvNet and ResNet-18."""

from pqd_jax.models.convnet import ConvNet
from pqd_jax.models.resnet import ResNet, ResNet18

__all__ = ["ConvNet", "ResNet", "ResNet18"]
