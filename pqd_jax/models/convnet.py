"""The dataset-distillation ConvNet (DC/DSA/DM/MTT standard).

``depth`` × [3×3 conv, ``width`` channels → norm → ReLU → 2×2 average pool],
then a linear head. ``norm="instance"`` normalises each channel of each image
over its spatial positions with a per-channel affine (DC's
``GroupNorm(width, width)``), so it needs no batch statistics. With
``pad_to=32`` a 28×28 input is zero-padded to 32×32 first, the receptive
geometry of DC's first-conv padding of 3 (32→16→8→4, 2048 features).
"""

from typing import Literal

import flax.linen as nn
import jax.numpy as jnp

__all__ = ["ConvNet"]

Norm = Literal["instance", "batch", "none"]


class ConvNet(nn.Module):
  """ConvNet-``depth``, width ``width``.

  Attributes:
    num_classes: output logits.
    width: channels of every conv.
    depth: number of conv blocks.
    norm: ``"instance"`` (default), ``"batch"`` or ``"none"``.
    pad_to: zero-pad the input to this side length first (None: no padding).
  """

  num_classes: int
  width: int = 128
  depth: int = 3
  norm: Norm = "instance"
  pad_to: int | None = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    """Logits ``[b, num_classes]`` of images ``[b, h, w, c]``.

    Args:
      x: images, NHWC.
      train: batch norm uses (and updates) batch statistics when True.
    """
    if self.norm not in ("instance", "batch", "none"):
      raise ValueError(f"norm must be 'instance', 'batch' or 'none', got "
                       f"{self.norm!r}.")
    if self.pad_to is not None and x.shape[1] < self.pad_to:
      ph = self.pad_to - x.shape[1]
      pw = self.pad_to - x.shape[2]
      x = jnp.pad(x, ((0, 0), (ph // 2, ph - ph // 2),
                      (pw // 2, pw - pw // 2), (0, 0)))
    for i in range(self.depth):
      x = nn.Conv(self.width, (3, 3), padding="SAME",
                  use_bias=self.norm == "none", name=f"conv{i}")(x)
      if self.norm == "instance":
        x = nn.GroupNorm(num_groups=self.width, name=f"norm{i}")(x)
      elif self.norm == "batch":
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                         name=f"norm{i}")(x)
      x = nn.relu(x)
      x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(self.num_classes, name="head")(x)
