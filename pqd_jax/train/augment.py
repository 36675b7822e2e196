"""Batch augmentations on device (jit-able): flip, RandomResizedCrop, CutMix.

Each takes an explicit key; the same key gives the same views, so the frozen
teacher can label exactly the views the student sees (online soft labels).
"""

import jax
import jax.numpy as jnp

__all__ = ["cutmix", "random_flip", "random_resized_crop"]


def random_flip(rng: jax.Array, images: jnp.ndarray) -> jnp.ndarray:
  """Flips each ``[b, h, w, c]`` image horizontally with probability 1/2."""
  flip = jax.random.bernoulli(rng, 0.5, (images.shape[0],))
  return jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)


def random_resized_crop(rng: jax.Array, images: jnp.ndarray, *,
                        scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)
                        ) -> jnp.ndarray:
  """Crops a random box of each image and resizes it back (bilinear).

  The box has area ``∈ scale`` × the image area and aspect ``∈ ratio``
  (log-uniform), clipped to the image, as torchvision's RandomResizedCrop.

  Args:
    rng: key.
    images: ``[b, h, w, c]``.
    scale: range of the box area as a fraction of the image.
    ratio: range of the box aspect ratio (width / height).

  Returns:
    ``[b, h, w, c]`` crops.
  """
  b, h, w, _ = images.shape
  k_area, k_ratio, k_y, k_x = jax.random.split(rng, 4)
  area = jax.random.uniform(k_area, (b,), minval=scale[0], maxval=scale[1])
  log_r = jax.random.uniform(k_ratio, (b,), minval=jnp.log(ratio[0]),
                             maxval=jnp.log(ratio[1]))
  r = jnp.exp(log_r)
  bw = jnp.clip(jnp.sqrt(area * h * w * r), 1.0, w)
  bh = jnp.clip(jnp.sqrt(area * h * w / r), 1.0, h)
  y0 = jax.random.uniform(k_y, (b,)) * (h - bh)
  x0 = jax.random.uniform(k_x, (b,)) * (w - bw)

  def one(image, y0, x0, bh, bw):
    sy, sx = h / bh, w / bw
    return jax.image.scale_and_translate(
        image, (h, w, image.shape[-1]), (0, 1),
        jnp.array([sy, sx]), jnp.array([-y0 * sy, -x0 * sx]),
        method="linear", antialias=False)

  return jax.vmap(one)(images, y0, x0, bh, bw)


def cutmix(rng: jax.Array, images: jnp.ndarray, weights: jnp.ndarray, *,
           alpha: float = 1.0
           ) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """CutMix with one box per batch; the sample weights mix like the labels.

  A box of area fraction ``1 − λ`` (λ ~ Beta(alpha, alpha), then recomputed
  from the clipped box) is pasted from a permuted batch. A mixed sample is
  ``λ`` of image ``a`` and ``1 − λ`` of image ``b``, so its weight is
  ``λ·w_a + (1 − λ)·w_b``.

  Args:
    rng: key.
    images: ``[b, h, w, c]``.
    weights: ``[b]`` per-image weights.
    alpha: Beta parameter.

  Returns:
    ``(mixed [b, h, w, c], perm [b], lam scalar, mixed_weights [b])``.
  """
  b, h, w, _ = images.shape
  k_lam, k_perm, k_y, k_x = jax.random.split(rng, 4)
  lam = jax.random.beta(k_lam, alpha, alpha)
  perm = jax.random.permutation(k_perm, b)
  cut = jnp.sqrt(1.0 - lam)
  ch, cw = (cut * h).astype(jnp.int32), (cut * w).astype(jnp.int32)
  cy = jax.random.randint(k_y, (), 0, h)
  cx = jax.random.randint(k_x, (), 0, w)
  y0, y1 = jnp.clip(cy - ch // 2, 0, h), jnp.clip(cy + ch // 2, 0, h)
  x0, x1 = jnp.clip(cx - cw // 2, 0, w), jnp.clip(cx + cw // 2, 0, w)
  yy = jnp.arange(h)[:, None]
  xx = jnp.arange(w)[None, :]
  box = (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)
  lam = 1.0 - jnp.sum(box) / (h * w)
  mixed = jnp.where(box[None, :, :, None], images[perm], images)
  return mixed, perm, lam, lam * weights + (1.0 - lam) * weights[perm]
