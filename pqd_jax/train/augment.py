"""Batch augmentations on device (jit-able): flip, crop, CutMix, DSA.

Each takes an explicit key; the same key gives the same views, so the frozen
teacher can label exactly the views the student sees (online soft labels).
``dsa`` is the augmentation of the hard-label evaluation protocol of the
dataset-distillation tables (DSA, Zhao & Bilen 2021).
"""

import jax
import jax.numpy as jnp

__all__ = ["affine", "cutmix", "dsa", "random_flip", "random_resized_crop"]


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


def affine(images: jnp.ndarray, theta: jnp.ndarray) -> jnp.ndarray:
  """Warps ``[b, h, w, c]`` images by ``theta [b, 2, 3]``, zeros outside.

  ``theta`` maps output to input coordinates normalised to [-1, 1] with the
  corners on the corner pixels (``affine_grid``/``grid_sample`` with
  ``align_corners=True``); sampling is bilinear. The geometric DSA
  transforms (crop, scale, rotate) are such warps.

  Args:
    images: ``[b, h, w, c]``.
    theta: ``[b, 2, 3]``, one affine map per image.

  Returns:
    ``[b, h, w, c]`` warped images.
  """
  _, h, w, _ = images.shape
  yn, xn = jnp.meshgrid(jnp.linspace(-1.0, 1.0, h), jnp.linspace(-1.0, 1.0, w),
                        indexing="ij")
  grid = jnp.stack([xn, yn, jnp.ones_like(xn)], axis=-1)  # [h, w, 3]

  def one(image, t):
    src = grid @ t.T  # [h, w, 2]: (x, y) in the input
    x = (src[..., 0] + 1.0) * (w - 1) / 2.0
    y = (src[..., 1] + 1.0) * (h - 1) / 2.0
    sample = lambda channel: jax.scipy.ndimage.map_coordinates(
        channel, [y, x], order=1, mode="constant", cval=0.0)
    return jax.vmap(sample, in_axes=-1, out_axes=-1)(image)

  return jax.vmap(one)(images, theta)


def _dsa_color(rng, x, p):
  k_b, k_s, k_c = jax.random.split(rng, 3)
  b = x.shape[0]
  x = x + (jax.random.uniform(k_b, (b, 1, 1, 1)) - 0.5) * p["brightness"]
  mean = x.mean(axis=-1, keepdims=True)
  x = (x - mean) * (jax.random.uniform(k_s, (b, 1, 1, 1))
                    * p["saturation"]) + mean
  mean = x.mean(axis=(1, 2, 3), keepdims=True)
  return (x - mean) * (jax.random.uniform(k_c, (b, 1, 1, 1))
                       + p["contrast"]) + mean


def _dsa_crop(rng, x, p):
  """Integer translation by up to ``crop_pad`` of the size, zero fill."""
  b, h, w, _ = x.shape
  k_x, k_y = jax.random.split(rng)
  sh, sw = int(h * p["crop_pad"] + 0.5), int(w * p["crop_pad"] + 0.5)
  dy = jax.random.randint(k_y, (b,), -sh, sh + 1)
  dx = jax.random.randint(k_x, (b,), -sw, sw + 1)
  zero, one = jnp.zeros(b), jnp.ones(b)
  theta = jnp.stack([
      jnp.stack([one, zero, 2.0 * dx / (w - 1)], -1),
      jnp.stack([zero, one, 2.0 * dy / (h - 1)], -1)], 1)
  return affine(x, theta)


def _dsa_cutout(rng, x, p):
  """Zeroes a ``cutout`` × size box at a random centre of each image."""
  b, h, w, _ = x.shape
  k_x, k_y = jax.random.split(rng)
  ch, cw = int(h * p["cutout"] + 0.5), int(w * p["cutout"] + 0.5)
  cy = jax.random.randint(k_y, (b, 1, 1), 0, h + (1 - ch % 2))
  cx = jax.random.randint(k_x, (b, 1, 1), 0, w + (1 - cw % 2))
  yy = jnp.arange(h)[None, :, None]
  xx = jnp.arange(w)[None, None, :]
  box = ((yy >= cy - ch // 2) & (yy < cy - ch // 2 + ch)
         & (xx >= cx - cw // 2) & (xx < cx - cw // 2 + cw))
  return jnp.where(box[..., None], 0.0, x)


def _dsa_flip(rng, x, p):
  del p
  return random_flip(rng, x)


def _dsa_scale(rng, x, p):
  """Independent scaling of each axis by a factor in [1/s, s]."""
  b = x.shape[0]
  lo, hi = 1.0 / p["scale"], p["scale"]
  sx, sy = jax.random.uniform(rng, (2, b), minval=lo, maxval=hi)
  zero = jnp.zeros(b)
  theta = jnp.stack([jnp.stack([sx, zero, zero], -1),
                     jnp.stack([zero, sy, zero], -1)], 1)
  return affine(x, theta)


def _dsa_rotate(rng, x, p):
  b = x.shape[0]
  angle = jnp.deg2rad(jax.random.uniform(
      rng, (b,), minval=-p["rotate_degrees"], maxval=p["rotate_degrees"]))
  zero, cos, sin = jnp.zeros(b), jnp.cos(angle), jnp.sin(angle)
  theta = jnp.stack([jnp.stack([cos, sin, zero], -1),
                     jnp.stack([-sin, cos, zero], -1)], 1)
  return affine(x, theta)


DSA_TRANSFORMS = ("color", "crop", "cutout", "flip", "scale", "rotate")
_DSA_FNS = {"color": _dsa_color, "crop": _dsa_crop, "cutout": _dsa_cutout,
            "flip": _dsa_flip, "scale": _dsa_scale, "rotate": _dsa_rotate}


def dsa(rng: jax.Array, images: jnp.ndarray, *,
        transforms: tuple[str, ...] = DSA_TRANSFORMS,
        scale: float = 1.2, rotate_degrees: float = 15.0,
        crop_pad: float = 0.125, cutout: float = 0.5,
        brightness: float = 1.0, saturation: float = 2.0,
        contrast: float = 0.5) -> jnp.ndarray:
  """Differentiable Siamese Augmentation, one transform per batch.

  As DSA's default single mode: each batch draws one of ``transforms``
  uniformly, then every image gets its own random parameters. The defaults
  are DSA's (``color_crop_cutout_flip_scale_rotate``): colour (brightness
  shift, saturation and contrast factors), translation by up to 1/8 of the
  size, a cutout of half the size, horizontal flip, per-axis scaling in
  [1/1.2, 1.2] and rotation within ±15°. Pixels moved in from outside are 0.

  Args:
    rng: key.
    images: ``[b, h, w, c]``.
    transforms: the transforms to draw from (a subset of
      :data:`DSA_TRANSFORMS`, e.g. without ``"flip"`` for digits).
    scale: largest scale factor per axis.
    rotate_degrees: largest rotation.
    crop_pad: largest translation as a fraction of the size.
    cutout: side of the cutout box as a fraction of the size.
    brightness: range of the brightness shift.
    saturation: saturation factors are in ``[0, saturation]``.
    contrast: contrast factors are in ``[contrast, contrast + 1]``.

  Returns:
    ``[b, h, w, c]`` augmented images.

  Raises:
    ValueError: for an unknown or empty set of transforms.
  """
  unknown = [t for t in transforms if t not in _DSA_FNS]
  if unknown or not transforms:
    raise ValueError(f"DSA transforms must be a non-empty subset of "
                     f"{DSA_TRANSFORMS}, got {tuple(transforms)!r}.")
  params = {"scale": scale, "rotate_degrees": rotate_degrees,
            "crop_pad": crop_pad, "cutout": cutout, "brightness": brightness,
            "saturation": saturation, "contrast": contrast}
  k_pick, k_apply = jax.random.split(rng)
  branches = [lambda k, x, f=_DSA_FNS[t]: f(k, x, params) for t in transforms]
  pick = jax.random.randint(k_pick, (), 0, len(branches))
  return jax.lax.switch(pick, branches, k_apply, images)
