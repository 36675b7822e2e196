"""Training a small KL autoencoder (the embedded default's latent space).

Loss: mean squared reconstruction error of a posterior sample plus
``kl_weight`` × the KL divergence to N(0, I) per latent element. AdamW with
warm-up and cosine decay. The state is checkpointed with orbax every
``checkpoint_every`` steps; running again with the same workdir resumes from
the last checkpoint and sees exactly the batches an uninterrupted run would
have seen (batch ``s`` and its noise depend only on the seed and ``s``).
When training ends, the scaling factor is set to 1 / std of the training
latents (Stable Diffusion's convention) and the model is written with
``save_pretrained`` to ``workdir/final`` (atomically).
"""

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pqd_jax import workdir as workdir_lib
from pqd_jax.autoencoder import model as model_lib
from pqd_jax.data import pipeline, sources
from pqd_jax.train import steps, trainer

__all__ = ["CONFIG_KEYS", "psnr", "reconstruct", "train_autoencoder"]

CONFIG_KEYS = (
    "channels", "image_size", "block_out_channels", "layers_per_block",
    "latent_channels", "norm_num_groups", "kl_weight", "learning_rate",
    "weight_decay", "warmup_steps", "batch_size", "num_steps", "seed",
)


def psnr(reference: np.ndarray, reconstruction: np.ndarray) -> float:
  """PSNR in dB of images in ``[-1, 1]`` (peak = the ``[0, 1]`` range)."""
  mse = np.mean(((np.clip(reconstruction, -1, 1) - reference) / 2.0) ** 2)
  return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def reconstruct(ae: model_lib.Autoencoder, images: np.ndarray,
                batch_size: int = 256) -> np.ndarray:
  """Decode(encode(images)) with the posterior mean."""
  return model_lib.decode(ae, model_lib.encode(ae, images,
                                               batch_size=batch_size),
                          batch_size=batch_size)


# Beside the weights in final/: the training steps, so a finished run is
# loaded as is (even without its checkpoints).
_TRAINING_FILE = "training.json"


def train_autoencoder(
    config: Any,
    source: sources.ImageSource,
    workdir: str,
    *,
    test_images: np.ndarray | None = None,
    eval_every: int = 0,
    checkpoint_every: int = 500,
    progress: bool = True,
) -> model_lib.Autoencoder:
  """Trains (or resumes training) a small ``FlaxAutoencoderKL``.

  Args:
    config: autoencoder config with the fields in :data:`CONFIG_KEYS`.
    source: training images.
    workdir: directory for checkpoints, ``config.json``, ``metrics.jsonl``
      and the final model (``final/``).
    test_images: ``[m, h, w, c]`` in ``[-1, 1]`` to report PSNR on.
    eval_every: steps between PSNR evaluations (0: only at the end).
    checkpoint_every: steps between checkpoints.
    progress: show a tqdm progress bar.

  Returns:
    The trained autoencoder.

  Raises:
    ValueError: for a workdir trained with a different config, or images
      that do not match the config.
  """
  cfg = workdir_lib.config_values(config, CONFIG_KEYS)
  os.makedirs(workdir, exist_ok=True)
  trainer.check_run_config(workdir, cfg)
  image, _ = source[0]
  expected = (cfg["image_size"], cfg["image_size"], cfg["channels"])
  if image.shape != expected:
    raise ValueError(f"training images have shape {image.shape}, the config "
                     f"expects {expected}.")
  final = os.path.join(workdir, "final")
  done_path = os.path.join(final, _TRAINING_FILE)
  done = workdir_lib.read_json(done_path)  # None if missing or damaged
  if isinstance(done, dict) and done.get("num_steps") == cfg["num_steps"]:
    return model_lib.load_pretrained(final)
  rng = jax.random.key(cfg["seed"])
  init_key, noise_key = jax.random.split(rng)
  ae = model_lib.init_autoencoder(config, init_key)
  model = ae.model
  tx = steps.make_optimizer("adamw", cfg["learning_rate"], cfg["num_steps"],
                            warmup_steps=cfg["warmup_steps"],
                            weight_decay=cfg["weight_decay"])
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=ae.params,
                           batch_stats={}, opt_state=tx.init(ae.params))

  def loss_fn(params, x, key):
    post = model.apply({"params": params}, jnp.transpose(x, (0, 3, 1, 2)),
                       method=model.encode).latent_dist
    rec = model.apply({"params": params}, post.sample(key),
                      method=model.decode).sample
    rec = jnp.transpose(rec, (0, 2, 3, 1))
    mse = jnp.mean((rec - x) ** 2)
    kl = jnp.mean(post.kl()) / np.prod(post.mean.shape[1:])
    return mse + cfg["kl_weight"] * kl, (mse, kl)

  @jax.jit
  def train_step(state, batch, key):
    (loss, (mse, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch["image"], key)
    return steps.apply_gradients(state, grads, tx), {
        "loss": loss, "mse": mse, "kl": kl}

  data = pipeline.batch_dataset(source, cfg["batch_size"], seed=cfg["seed"])
  batch_fn = lambda step: {"image": jnp.asarray(data[step]["image"])}
  eval_fn = None
  if test_images is not None:
    eval_fn = lambda s: {"test_psnr": psnr(test_images, reconstruct(
        model_lib.Autoencoder(model, s.params, 1.0), test_images))}
  state = trainer.fit(state, train_step, batch_fn, cfg["num_steps"], workdir,
                      rng=noise_key, checkpoint_every=checkpoint_every,
                      log_every=eval_every or 50, eval_fn=eval_fn,
                      eval_every=eval_every, progress=progress,
                      desc="autoencoder")

  # Scaling factor: 1 / std of the latents (posterior means) of a sample.
  trained = model_lib.Autoencoder(model, state.params, 1.0)
  sample_idx = np.random.default_rng(0).permutation(len(source))[:2048]
  z = model_lib.encode(trained, pipeline.to_unit_range(source.read(
      np.sort(sample_idx))))
  ae = model_lib.Autoencoder(model, state.params, float(1.0 / z.std()))
  with workdir_lib.atomic_directory(final) as tmp:
    model_lib.save_pretrained(ae, tmp)
    workdir_lib.write_json(os.path.join(tmp, _TRAINING_FILE),
                         {"num_steps": cfg["num_steps"]})
  if test_images is not None:
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
      f.write(json.dumps({
          "step": cfg["num_steps"], "final": True,
          "test_psnr": psnr(test_images, reconstruct(ae, test_images)),
          "scaling_factor": ae.scaling_factor}) + "\n")
  return ae
