"""diffusers' Flax ``FlaxAutoencoderKL``: build, load, encode, decode.

One implementation for both cases: the Stable Diffusion VAE loaded from a hub
id or a local directory, and a small one built from a config and trained here
(:mod:`pqd_jax.autoencoder.train`). Images are ``[b, h, w, c]`` in ``[-1, 1]``
(NHWC, as everywhere in pqd_jax); latents are ``[b, h', w', c']`` already
multiplied by the scaling factor, which is the space ``pqd_jax.quantize``
works in. The module may compute in bfloat16 or float16
(:func:`with_dtype`); latents and images come back in float32 either way.
"""

import functools
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from diffusers import FlaxAutoencoderKL
from diffusers.utils import CONFIG_NAME, FLAX_WEIGHTS_NAME
from jax.sharding import Mesh
from jax.typing import DTypeLike

from pqd_jax import checks, diffusers_compat, sharding, workdir

__all__ = [
    "Autoencoder",
    "build",
    "decode",
    "decode_batch",
    "encode",
    "encode_batch",
    "init_autoencoder",
    "load_pretrained",
    "save_pretrained",
    "with_dtype",
]

# What to do about a checkpoint that is cut short or corrupt (a pipeline
# stage that loads its own artefact says more: pqd_jax.workdir.advise).
_DAMAGED = ("the checkpoint is truncated or corrupt: save, copy or download "
            "it again")


class Autoencoder(NamedTuple):
  """A KL autoencoder with its parameters.

  Attributes:
    model: the ``FlaxAutoencoderKL`` module (its ``config`` holds the shape).
    params: its parameters.
    scaling_factor: latents are ``scaling_factor × posterior``.
  """

  model: FlaxAutoencoderKL
  params: Any
  scaling_factor: float


def build(config: Any) -> FlaxAutoencoderKL:
  """Builds a ``FlaxAutoencoderKL`` from a config.

  Args:
    config: with fields ``channels`` (image channels), ``block_out_channels``
      (one entry per resolution; the latent side is the image side divided
      by ``2 ** (len - 1)``), ``layers_per_block``, ``latent_channels``,
      ``norm_num_groups`` and ``image_size``.

  Returns:
    The module (no parameters yet).
  """
  blocks = tuple(config.block_out_channels)
  if not blocks or any(c % config.norm_num_groups for c in blocks):
    raise ValueError(
        f"block_out_channels {blocks} must be non-empty multiples of "
        f"norm_num_groups={config.norm_num_groups}."
    )
  return FlaxAutoencoderKL(
      in_channels=config.channels,
      out_channels=config.channels,
      down_block_types=("DownEncoderBlock2D",) * len(blocks),
      up_block_types=("UpDecoderBlock2D",) * len(blocks),
      block_out_channels=blocks,
      layers_per_block=config.layers_per_block,
      latent_channels=config.latent_channels,
      norm_num_groups=config.norm_num_groups,
      sample_size=config.image_size,
  )


def init_autoencoder(config: Any, rng: jax.Array) -> Autoencoder:
  """A randomly initialised autoencoder (scaling factor 1 until trained)."""
  model = build(config)
  x = jnp.zeros((1, config.channels, config.image_size, config.image_size))

  @jax.jit
  def init(key):
    return model.init({"params": key, "dropout": key, "gaussian": key},
                      x)["params"]

  return Autoencoder(model, init(rng), 1.0)


def with_dtype(ae: Autoencoder, dtype: DTypeLike) -> Autoencoder:
  """The autoencoder computing in ``dtype``, its parameters cast to it.

  Args:
    ae: the autoencoder.
    dtype: float32, bfloat16 or float16, or a name that
      :func:`pqd_jax.checks.compute_dtype` resolves (``"auto"``).

  Returns:
    The module with ``dtype`` and its floating parameters in ``dtype``
    (leaves already in it are kept as they are).

  Raises:
    ValueError: for a dtype that is not a compute dtype on this backend.
  """
  dtype = checks.compute_dtype(dtype, "dtype")
  params = diffusers_compat.cast_floating(ae.params, dtype)
  model = (ae.model if jnp.dtype(ae.model.dtype) == dtype
           else ae.model.clone(dtype=dtype))
  return ae._replace(model=model, params=params)


def load_pretrained(path: str, *, subfolder: str | None = None,
                    revision: str | None = None,
                    from_pt: bool = False,
                    dtype: DTypeLike = jnp.float32) -> Autoencoder:
  """Loads a pretrained ``FlaxAutoencoderKL`` (hub id or local directory).

  Args:
    path: a local directory written by ``save_pretrained`` (or a hub id,
      e.g. ``"stable-diffusion-v1-5/stable-diffusion-v1-5"`` with
      ``subfolder="vae"``, when the hub is reachable).
    subfolder: sub-directory holding the VAE.
    revision: hub revision (``"bf16"`` holds the Flax weights of
      ``CompVis/stable-diffusion-v1-4``).
    from_pt: convert PyTorch weights (needs torch).
    dtype: what the module computes in and its parameters are cast to
      (see :func:`with_dtype`); not stored in the checkpoint, so it is
      given at each load.

  Returns:
    The autoencoder with the scaling factor from its config.

  Raises:
    FileNotFoundError: for a local path that does not exist or holds no
      autoencoder.
    ImportError: for ``from_pt`` without torch.
    ValueError: for a dtype that is not a compute dtype on this backend, or
      (:class:`pqd_jax.workdir.UnreadableFileError`) a config or weights
      file that is cut short or corrupt.
  """
  dtype = checks.compute_dtype(dtype, "dtype")
  checks.require_torch_for_from_pt(from_pt)
  looks_local = os.path.sep in path or path.startswith(".")
  if looks_local and not os.path.isdir(path):
    raise FileNotFoundError(f"No pretrained autoencoder directory at {path!r}.")
  kwargs = {"subfolder": subfolder} if subfolder else {}
  if revision:
    kwargs["revision"] = revision
  where = os.path.join(path, subfolder or "")
  config_file = os.path.join(where, CONFIG_NAME)
  if os.path.isfile(config_file):  # diffusers would call a cut one missing
    workdir.load_json(config_file, _DAMAGED)
  weights = (os.path.join(where, FLAX_WEIGHTS_NAME)
             if os.path.isdir(where) and not from_pt else where)
  # A cut weights file fails in msgpack (a ValueError), or in diffusers
  # ("Unable to convert ..."): both are converted, as missing files are not.
  with workdir.reading(weights, _DAMAGED):
    try:
      model, params = FlaxAutoencoderKL.from_pretrained(
          path, from_pt=from_pt, **kwargs)
    except OSError as e:
      if "Unable to convert" in str(e):
        raise
      raise FileNotFoundError(
          f"Could not load a FlaxAutoencoderKL from {path!r}"
          f"{f' (subfolder {subfolder!r})' if subfolder else ''}: {e}"
      ) from e
  # config.json gives lists; jit needs a hashable (static) module.
  model = diffusers_compat.hashable_module(model)
  return with_dtype(
      Autoencoder(model, params, float(model.config.scaling_factor)), dtype)


def save_pretrained(ae: Autoencoder, path: str) -> None:
  """Writes the autoencoder (config, scaling factor and weights) to ``path``.

  The result loads with :func:`load_pretrained` and with diffusers directly.
  """
  ae.model.save_pretrained(path, params=ae.params)
  if float(ae.model.config.scaling_factor) != ae.scaling_factor:
    # diffusers keeps the factor in config.json; record the trained one.
    cfg_path = os.path.join(path, CONFIG_NAME)
    cfg = workdir.load_json(cfg_path, _DAMAGED)
    cfg["scaling_factor"] = ae.scaling_factor
    workdir.write_json(cfg_path, cfg)


def _check_images(ae: Autoencoder, images: Any) -> Any:
  arr = (images if isinstance(images, sharding.LazyRows)
         else np.asarray(images))
  channels = ae.model.config.in_channels
  if arr.ndim != 4 or arr.shape[-1] != channels:
    raise ValueError(
        f"images must have shape [b, h, w, {channels}] (NHWC, in [-1, 1]), "
        f"got {arr.shape}."
    )
  factor = 2 ** (len(ae.model.config.block_out_channels) - 1)
  if arr.shape[1] % factor or arr.shape[2] % factor:
    raise ValueError(
        f"image side {arr.shape[1:3]} must be divisible by {factor} (the "
        "autoencoder's downsampling)."
    )
  return arr


@functools.partial(jax.jit, static_argnames=("model", "sample"))
def encode_batch(model: FlaxAutoencoderKL, params: Any, x: jax.Array,
                 key: jax.Array, scale: float, sample: bool) -> jax.Array:
  """One compiled encode: ``[b, h, w, c]`` images → scaled latents (NHWC).

  What :func:`encode` runs on each batch (and what a memory measurement
  lowers): the posterior mean, or a sample drawn with ``key``; float32
  whatever the module's dtype.
  """
  post = model.apply({"params": params}, jnp.transpose(x, (0, 3, 1, 2)),
                     method=model.encode).latent_dist
  z = post.sample(key) if sample else post.mean
  return z.astype(jnp.float32) * scale


@functools.partial(jax.jit, static_argnames=("model",))
def decode_batch(model: FlaxAutoencoderKL, params: Any, z: jax.Array,
                 scale: float) -> jax.Array:
  """One compiled decode: scaled latents → float32 ``[b, h, w, c]`` images."""
  out = model.apply({"params": params}, z / scale, method=model.decode).sample
  return jnp.transpose(out, (0, 2, 3, 1)).astype(jnp.float32)


def encode(ae: Autoencoder, images: Any, *, sample: bool = False,
           rng: jax.Array | None = None, batch_size: int = 256,
           mesh: Mesh | None = None) -> np.ndarray:
  """Encodes images into scaled latents.

  Args:
    ae: the autoencoder.
    images: ``[b, h, w, c]`` in ``[-1, 1]`` (numpy or
      :class:`pqd_jax.sharding.LazyRows`, of which each process reads only
      its devices' rows).
    sample: a posterior sample instead of the posterior mean (D4M samples).
    rng: key for the samples (batch ``i`` uses ``fold_in(rng, i)``).
    batch_size: images per compiled call.
    mesh: batches are sharded over its ``"data"`` axis (default: every
      device).

  Returns:
    ``[b, h', w', latent_channels]`` float32 latents × scaling factor.

  Raises:
    ValueError: for images of the wrong rank, channels or size.
  """
  arr = _check_images(ae, images)
  mesh = sharding.data_mesh() if mesh is None else mesh
  params, rng = sharding.replicate(
      (ae.params, jax.random.key(0) if rng is None else rng), mesh)
  fn = lambda x, start: encode_batch(ae.model, params, x,
                                jax.random.fold_in(rng, start),
                                ae.scaling_factor, sample)
  return sharding.map_batches(fn, (arr,), batch_size, mesh,
                              dtypes=(np.float32,))


def decode(ae: Autoencoder, latents: Any, *, batch_size: int = 256,
           mesh: Mesh | None = None) -> np.ndarray:
  """Decodes scaled latents into images ``[b, h, w, c]`` (about ``[-1, 1]``).

  Batches are sharded over the mesh's ``"data"`` axis as in :func:`encode`.

  Raises:
    ValueError: for latents of the wrong rank or channels.
  """
  arr = np.asarray(latents)
  channels = ae.model.config.latent_channels
  if arr.ndim != 4 or arr.shape[-1] != channels:
    raise ValueError(
        f"latents must have shape [b, h, w, {channels}], got {arr.shape}."
    )
  mesh = sharding.data_mesh() if mesh is None else mesh
  params = sharding.replicate(ae.params, mesh)
  fn = lambda z, start: decode_batch(ae.model, params, z, ae.scaling_factor)
  return sharding.map_batches(fn, (arr,), batch_size, mesh,
                              dtypes=(np.float32,))
