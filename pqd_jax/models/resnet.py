"""ResNet-18 (the paper's teacher and student) with two stems.

``stem="imagenet"``: 7×7 stride-2 conv and 3×3 stride-2 max pool (224 px
inputs). ``stem="small"``: one 3×3 stride-1 conv and no pool (28–64 px
inputs, as the CIFAR variants the distillation papers use). BatchNorm uses
batch statistics and updates ``batch_stats`` in train mode only.
"""

import functools
from collections.abc import Sequence
from typing import Literal

import flax.linen as nn
import jax.numpy as jnp

__all__ = ["ResNet", "ResNet18"]

Stem = Literal["imagenet", "small"]
# torchvision's ImageNet input normalisation (RGB, of images in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _BasicBlock(nn.Module):
  filters: int
  strides: int = 1

  @nn.compact
  def __call__(self, x, train: bool):
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5)
    residual = x
    y = nn.Conv(self.filters, (3, 3), (self.strides, self.strides),
                padding=((1, 1), (1, 1)), use_bias=False)(x)
    y = nn.relu(norm()(y))
    y = nn.Conv(self.filters, (3, 3), padding=((1, 1), (1, 1)),
                use_bias=False)(y)
    y = norm(scale_init=nn.initializers.zeros)(y)
    if residual.shape != y.shape:
      residual = nn.Conv(self.filters, (1, 1), (self.strides, self.strides),
                         use_bias=False, name="shortcut_conv")(residual)
      residual = norm(name="shortcut_norm")(residual)
    return nn.relu(residual + y)


class ResNet(nn.Module):
  """A ResNet of basic blocks.

  Attributes:
    num_classes: output logits.
    stage_sizes: blocks per stage (ResNet-18: 2, 2, 2, 2).
    width: channels of the first stage (doubled at every stage).
    stem: ``"imagenet"`` or ``"small"``.
    torchvision_input: map the ``[-1, 1]`` images to torchvision's ImageNet
      normalisation, ``((x + 1) / 2 - mean) / std``, as the weights of
      :func:`pqd_jax.models.from_torch.load_resnet18` expect.
    output_classes: the head's outputs returned, in this order (e.g. the
      ImageNet classes of a subset); None returns all ``num_classes``.
  """

  num_classes: int
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  stem: Stem = "imagenet"
  torchvision_input: bool = False
  output_classes: tuple[int, ...] | None = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    """Logits ``[b, num_classes]`` of images ``[b, h, w, c]``."""
    if self.stem not in ("imagenet", "small"):
      raise ValueError(f"stem must be 'imagenet' or 'small', got "
                       f"{self.stem!r}.")
    if self.torchvision_input:
      x = ((x + 1.0) / 2.0 - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(
          IMAGENET_STD)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5)
    if self.stem == "imagenet":
      x = nn.Conv(self.width, (7, 7), (2, 2), padding=((3, 3), (3, 3)),
                  use_bias=False, name="stem_conv")(x)
      x = nn.relu(norm(name="stem_norm")(x))
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    else:
      x = nn.Conv(self.width, (3, 3), padding=((1, 1), (1, 1)),
                  use_bias=False, name="stem_conv")(x)
      x = nn.relu(norm(name="stem_norm")(x))
    for i, blocks in enumerate(self.stage_sizes):
      for j in range(blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = _BasicBlock(self.width * 2 ** i, strides,
                        name=f"stage{i}_block{j}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(self.num_classes, name="head")(x)
    if self.output_classes is not None:
      logits = logits[:, jnp.asarray(self.output_classes)]
    return logits


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2))
