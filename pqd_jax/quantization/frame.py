"""Each class's frame: its points centred and scaled into ``[-1, 1]``.

The quantizers compute squared distances in the expanded form
``||c||² - 2 c·x + ||x||²``, which in float32 loses the spread of a class to
cancellation when the class sits far from the origin, and to underflow or
overflow when its scale is tiny or huge. They therefore work on
``(x - shift) / scale`` with ``shift`` near the class mean and ``scale`` at
least the class's largest deviation from it, and map the results back: the
centroids by ``c · scale + shift``, squared errors by ``scale²`` (in float64,
since the square of a tiny scale is below float32's normal range).
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["ClassFrame", "check_spread", "distortion_back"]


class ClassFrame(NamedTuple):
  """Where each class is quantized.

  Attributes:
    shift: ``[c, d]`` float32, the class mean (or a point near it).
    scale: ``[c]`` float32 > 0, at least ``max |x - shift|`` over the
      class's entries (1 for a class of equal points).
  """

  shift: jax.Array
  scale: jax.Array

  def centroids_back(self, centroids: jax.Array) -> jax.Array:
    """``[c, k, d]`` centroids in the frame to the data's coordinates."""
    return centroids * self.scale[:, None, None] + self.shift[:, None, :]


def check_spread(scale: np.ndarray, classes: np.ndarray, d: int) -> None:
  """Distortions of the classes must fit in float32.

  A class's distortion is at most ``d · scale²``, which must stay below
  float32's largest value; the offset of a class does not matter.

  Args:
    scale: ``[c]`` each class's largest deviation from its mean (``inf`` if
      it overflowed float32).
    classes: ``[c]`` the labels, for the message.
    d: entries per point.

  Raises:
    ValueError: naming the classes whose spread is too large.
  """
  limit = math.sqrt(float(np.finfo(np.float32).max) / d)
  scale = np.asarray(scale, np.float64)
  bad = ~(scale < limit)
  if bad.any():
    raise ValueError(
        f"class(es) {np.asarray(classes)[bad][:5].tolist()} spread up to "
        f"{float(scale[bad].max()):.3g} from their mean; the distortion of "
        f"{d}-dimensional points overflows float32 unless that spread is "
        f"below {limit:.3g}. Rescale the latents."
    )


def distortion_back(sse: jax.Array, scale: jax.Array,
                    sizes: np.ndarray | None = None) -> jax.Array:
  """``[c]`` float32 distortion in the data's units, computed in float64.

  Args:
    sse: ``[c]`` mean (or, with ``sizes``, summed) squared error in the frame.
    scale: ``[c]`` the frame's scales.
    sizes: ``[c]`` points per class to divide a sum by, or None.

  Returns:
    ``sse · scale² (/ sizes)`` as float32.
  """
  out = np.asarray(sse, np.float64) * np.square(np.asarray(scale, np.float64))
  if sizes is not None:
    out = out / np.asarray(sizes, np.float64)
  return jnp.asarray(out.astype(np.float32))
