"""Image grids for inspecting distilled sets, reconstructions and samples."""

import numpy as np
from PIL import Image

__all__ = ["image_grid"]


def image_grid(images: np.ndarray, rows: int) -> Image.Image:
  """Tiles ``[n, h, w, c]`` images in ``[-1, 1]`` into one image.

  Args:
    images: ``n = rows · cols`` images (extra ones are dropped), NHWC, 1 or 3
      channels, clipped to ``[-1, 1]``.
    rows: number of rows; image ``i`` goes to row ``i // cols``.

  Returns:
    A grayscale or RGB ``PIL.Image`` of ``rows·h × cols·w`` pixels.

  Raises:
    ValueError: for a bad shape or fewer images than rows.
  """
  arr = np.asarray(images)
  if arr.ndim != 4 or arr.shape[-1] not in (1, 3):
    raise ValueError(f"images must have shape [n, h, w, 1 or 3], got "
                     f"{arr.shape}.")
  n, h, w, c = arr.shape
  if rows < 1 or n < rows:
    raise ValueError(f"rows must be in [1, {n}] for {n} images, got {rows}.")
  cols = n // rows
  arr = ((np.clip(arr[:rows * cols], -1, 1) + 1) * 127.5).round()
  arr = arr.astype(np.uint8).reshape(rows, cols, h, w, c)
  arr = arr.transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)
  return Image.fromarray(arr[..., 0] if c == 1 else arr)
