"""Parameterised storage: mosaics of factor² images, split for training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pqd_jax.data import formation


def _images(n, side=4, c=1, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (n, side, side, c)
                                             ).astype(np.float32)


def test_tile_places_image_t_at_row_t_div_f_and_column_t_mod_f():
  x = _images(8)
  mosaics = formation.tile(x, 2)
  assert mosaics.shape == (2, 8, 8, 1)
  for i in range(2):
    for t in range(4):
      r, c = divmod(t, 2)
      np.testing.assert_array_equal(
          mosaics[i, 4 * r:4 * r + 4, 4 * c:4 * c + 4], x[4 * i + t])


def test_split_of_a_tiled_set_is_each_image_upsampled():
  x = _images(8)
  tiles = formation.split(jnp.asarray(formation.tile(x, 2)), 2)
  expected = jax.image.resize(jnp.asarray(x), (8, 8, 8, 1), "bilinear")
  np.testing.assert_allclose(np.asarray(tiles), np.asarray(expected),
                             atol=1e-6)


def test_factor_one_is_the_identity():
  x = _images(3)
  np.testing.assert_array_equal(formation.tile(x, 1), x)
  np.testing.assert_array_equal(np.asarray(formation.split(x, 1)), x)


@pytest.mark.parametrize("call, message", [
    (lambda: formation.tile(_images(6), 2), "6 images do not fill mosaics"),
    (lambda: formation.tile(_images(4), 3), "factor must be one of"),
    (lambda: formation.split(_images(2, side=5), 2),
     "side of 5 does not split into 2 x 2"),
])
def test_bad_input_is_refused(call, message):
  with pytest.raises(ValueError, match=message):
    call()
