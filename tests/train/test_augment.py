import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pqd_jax.train import augment


def _images(b=8, h=12, w=10):
  return jax.random.uniform(jax.random.key(0), (b, h, w, 1))


def test_cutmix_weights_mix_like_the_pixels():
  x = _images()
  w = jnp.arange(1.0, 9.0)
  mixed, perm, lam, mw = augment.cutmix(jax.random.key(3), x, w)
  from_b = np.asarray(jnp.all(mixed == x[perm], axis=-1)
                      & ~jnp.all(mixed == x, axis=-1))
  frac_b = from_b[0].mean()  # the box is the same for every image
  np.testing.assert_allclose(1.0 - float(lam), frac_b, atol=1e-6)
  np.testing.assert_allclose(np.asarray(mw),
                             float(lam) * w + (1 - float(lam)) * w[perm],
                             rtol=1e-6)


def test_cutmix_uniform_weights_stay_uniform():
  _, _, _, mw = augment.cutmix(jax.random.key(1), _images(), jnp.ones(8))
  np.testing.assert_allclose(np.asarray(mw), 1.0, rtol=1e-6)


def test_same_key_same_views():
  x = _images()
  a = augment.random_resized_crop(jax.random.key(5), x)
  b = augment.random_resized_crop(jax.random.key(5), x)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_full_crop_is_identity():
  x = _images()
  # Area 1 at the image's own aspect (w / h = 10 / 12): the whole image.
  out = augment.random_resized_crop(jax.random.key(2), x, scale=(1.0, 1.0),
                                    ratio=(10 / 12, 10 / 12))
  np.testing.assert_allclose(np.asarray(out), np.asarray(x), atol=1e-5)


def test_flip_flips_whole_images():
  x = _images()
  out = np.asarray(augment.random_flip(jax.random.key(4), x))
  x = np.asarray(x)
  flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x,
                                                           strict=True)]
  kept = [np.array_equal(o, i) for o, i in zip(out, x, strict=True)]
  assert all(f or k for f, k in zip(flipped, kept, strict=True))
  assert 0 < sum(flipped) < len(x)


def _dsa_only(transform, x, key=0, **kw):
  return augment.dsa(jax.random.key(key), x, transforms=(transform,), **kw)


def test_affine_identity_keeps_the_image():
  x = _images()
  theta = jnp.tile(jnp.array([[1.0, 0, 0], [0, 1.0, 0]]), (8, 1, 1))
  np.testing.assert_allclose(np.asarray(augment.affine(x, theta)),
                             np.asarray(x), atol=1e-5)


def test_affine_quarter_turn_matches_rot90():
  x = _images(h=9, w=9)
  theta = jnp.tile(jnp.array([[0.0, 1.0, 0], [-1.0, 0.0, 0]]), (8, 1, 1))
  out = np.asarray(augment.affine(x, theta))
  rotated = [np.rot90(np.asarray(x)[:, :, :, 0], k, axes=(1, 2))
             for k in (1, 3)]
  assert any(np.allclose(out[..., 0], r, atol=1e-5) for r in rotated)


def test_dsa_translation_shifts_with_zero_fill():
  x = _images(b=16, h=16, w=16) + 1.0  # no zero pixels of its own
  out = np.asarray(_dsa_only("crop", x))
  for src, dst in zip(np.asarray(x), out, strict=True):
    matches = []
    for dy in range(-2, 3):  # int(16 * 0.125 + 0.5) = 2
      for dx in range(-2, 3):
        shifted = np.zeros_like(src)
        ys, xs = slice(max(dy, 0), 16 + min(dy, 0)), slice(max(dx, 0),
                                                           16 + min(dx, 0))
        yd, xd = slice(max(-dy, 0), 16 + min(-dy, 0)), slice(max(-dx, 0),
                                                             16 + min(-dx, 0))
        shifted[yd, xd] = src[ys, xs]
        matches.append(np.allclose(dst, shifted, atol=1e-5))
    assert sum(matches) == 1


def test_dsa_cutout_zeroes_one_box_of_half_the_size():
  x = _images(b=32, h=16, w=16) + 1.0
  out = np.asarray(_dsa_only("cutout", x))[..., 0]
  zero = out == 0.0
  np.testing.assert_array_equal(out[~zero], np.asarray(x)[..., 0][~zero])
  for z in zero:
    rows, cols = np.nonzero(z.any(1))[0], np.nonzero(z.any(0))[0]
    assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8
    assert z.sum() == len(rows) * len(cols)  # one rectangle
  assert zero.sum(axis=(1, 2)).max() == 64  # some box lies fully inside


def test_dsa_flip_flips_or_keeps_each_image():
  x = _images(b=32)
  out = np.asarray(_dsa_only("flip", x))
  flipped = np.all(out == np.asarray(x)[:, :, ::-1], axis=(1, 2, 3))
  kept = np.all(out == np.asarray(x), axis=(1, 2, 3))
  assert np.all(flipped | kept) and flipped.any() and kept.any()


def test_dsa_colour_is_an_affine_map_of_each_image():
  x = _images()
  out = np.asarray(_dsa_only("color", x))
  for src, dst in zip(np.asarray(x), out, strict=True):
    a, b = np.polyfit(src.ravel(), dst.ravel(), 1)
    np.testing.assert_allclose(dst, a * src + b, atol=1e-5)
    assert 0.0 <= a <= 1.5 + 1e-6  # saturation is a no-op on one channel


def test_dsa_unit_scale_and_zero_rotation_are_identity():
  x = _images()
  for transform, kw in (("scale", {"scale": 1.0}),
                        ("rotate", {"rotate_degrees": 0.0})):
    np.testing.assert_allclose(np.asarray(_dsa_only(transform, x, **kw)),
                               np.asarray(x), atol=1e-5)


def test_dsa_applies_one_transform_per_batch_and_draws_them_all():
  x = _images(b=4)
  dsa = jax.jit(augment.dsa, static_argnames=("transforms",))
  picked = set()
  for i in range(60):
    key = jax.random.key(i)
    out = np.asarray(dsa(key, x))
    same = [t for t in augment.DSA_TRANSFORMS
            if np.allclose(out, np.asarray(dsa(key, x, transforms=(t,))),
                           atol=1e-5)]
    assert len(same) == 1
    picked.add(same[0])
  assert picked == set(augment.DSA_TRANSFORMS)


def test_dsa_same_key_same_views():
  x = _images()
  a = augment.dsa(jax.random.key(4), x)
  b = augment.dsa(jax.random.key(4), x)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_dsa_unknown_transform_is_refused():
  with pytest.raises(ValueError, match="'shear'"):
    augment.dsa(jax.random.key(0), _images(), transforms=("flip", "shear"))
