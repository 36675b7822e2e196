import jax
import jax.numpy as jnp
import numpy as np

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
