import numpy as np
import pytest

from pqd_jax import visualize


def test_grid_places_image_i_at_row_i_div_cols():
  images = np.stack([np.full((2, 3, 1), v) for v in np.linspace(-1, 1, 6)])
  arr = np.asarray(visualize.image_grid(images, rows=2))
  assert arr.shape == (4, 9)
  np.testing.assert_array_equal(arr[0, 3:6], 51)   # image 1: -0.6 → 51
  np.testing.assert_array_equal(arr[2, 0:3], 153)  # image 3: 0.2 → 153


def test_grid_of_rgb_images_is_rgb():
  img = visualize.image_grid(np.zeros((4, 2, 2, 3)), rows=1)
  assert img.mode == "RGB" and img.size == (8, 2)


def test_grid_refuses_more_rows_than_images():
  with pytest.raises(ValueError, match=r"rows must be in \[1, 2\]"):
    visualize.image_grid(np.zeros((2, 2, 2, 1)), rows=3)
