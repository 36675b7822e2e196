"""The resize every decoded image goes through, as torchvision does it.

Two ways to bring an image to ``size × size``:

- ``crop_fraction = 0``: squash both sides to ``size`` (D4M's training-set
  resize; it ignores the aspect ratio);
- ``0 < crop_fraction <= 1``: resize the short side to ``round(size /
  crop_fraction)`` keeping the aspect ratio, then take the centre ``size ×
  size`` — torchvision's ``Resize(256)`` + ``CenterCrop(224)`` at 0.875,
  the evaluation transform of SRe2L, D4M and DDOQ, with the same rounding.

Both resample with PIL's bilinear filter (antialiased when shrinking), as
torchvision's PIL path does.
"""

from PIL import Image

__all__ = ["SRE2L_CROP_FRACTION", "resize"]

SRE2L_CROP_FRACTION = 224 / 256


def resize(image: Image.Image, size: int,
           crop_fraction: float = 0.0) -> Image.Image:
  """``image`` at ``size × size`` (see the module docstring).

  Raises:
    ValueError: for a ``crop_fraction`` outside ``[0, 1]``.
  """
  if not 0.0 <= crop_fraction <= 1.0:
    raise ValueError(f"crop_fraction must be in [0, 1], got {crop_fraction!r}.")
  if not crop_fraction:
    if image.size == (size, size):
      return image
    return image.resize((size, size), Image.Resampling.BILINEAR)
  short = int(round(size / crop_fraction))
  w, h = image.size
  # torchvision's Resize(int): the long side is truncated, not rounded.
  new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
  if new != image.size:
    image = image.resize(new, Image.Resampling.BILINEAR)
  left = int(round((new[0] - size) / 2.0))
  top = int(round((new[1] - size) / 2.0))
  return image.crop((left, top, left + size, top + size))
