"""Parameterised storage (IDC's multi-formation): several images per slot.

A stored image of side ``s`` holds ``factor²`` images of side ``s /
factor`` as a ``factor × factor`` mosaic; the student trains on the tiles,
each upsampled back to ``s`` (Kim et al., "Dataset Condensation via
Efficient Synthetic-Data Parameterization", 2022). At the same storage (IPC
stored images per class) a set then holds ``factor²`` times as many
training images. A mosaic trained as one image is a different, much worse
image: the split is part of the method.

Tile ``t`` of a mosaic sits at row ``t // factor``, column ``t % factor``.
"""

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["FACTORS", "split", "tile"]

FACTORS = (1, 2)


def _check(factor: int, side: int) -> None:
  if factor not in FACTORS:
    raise ValueError(f"factor must be one of {FACTORS}, got {factor!r}.")
  if side % factor:
    raise ValueError(f"an image side of {side} does not split into "
                     f"{factor} x {factor} tiles.")


def tile(images: np.ndarray, factor: int) -> np.ndarray:
  """Mosaics of consecutive groups of ``factor²`` images.

  Args:
    images: ``[m · factor², s, s, c]`` images, already at the tile side
      ``s`` (the stored side divided by ``factor``).
    factor: tiles per side.

  Returns:
    ``[m, s · factor, s · factor, c]``: mosaic ``i`` holds images
    ``i · factor² … (i + 1) · factor² − 1``, tile ``t`` at row ``t //
    factor``, column ``t % factor``.

  Raises:
    ValueError: for another factor, or a count that is not a multiple of
      ``factor²``.
  """
  _check(factor, 0)
  n, s, _, c = images.shape
  per = factor * factor
  if n % per:
    raise ValueError(f"{n} images do not fill mosaics of {per}.")
  grid = images.reshape(n // per, factor, factor, s, s, c)
  return grid.transpose(0, 1, 3, 2, 4, 5).reshape(n // per, factor * s,
                                                  factor * s, c)


def split(mosaics: jnp.ndarray, factor: int) -> jnp.ndarray:
  """The tiles of each mosaic, upsampled back to the mosaic's side.

  Args:
    mosaics: ``[b, S, S, c]`` stored images.
    factor: tiles per side (1 returns ``mosaics``).

  Returns:
    ``[b · factor², S, S, c]``: the tiles of mosaic ``i`` at rows ``i ·
    factor² …``, in tile order, each resized from ``S / factor`` to ``S``
    (bilinear, as ``jax.image.resize``).

  Raises:
    ValueError: for another factor or a side ``factor`` does not divide.
  """
  b, side, _, c = mosaics.shape
  _check(factor, side)
  if factor == 1:
    return mosaics
  s = side // factor
  tiles = mosaics.reshape(b, factor, s, factor, s, c).transpose(
      0, 1, 3, 2, 4, 5).reshape(b * factor * factor, s, s, c)
  return jax.image.resize(tiles, (tiles.shape[0], side, side, c), "bilinear")
