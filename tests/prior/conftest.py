import jax
import ml_collections
import numpy as np
import pytest

from pqd_jax.prior import model


def tiny_config(**overrides):
  config = ml_collections.ConfigDict(dict(
      block_out_channels=(32, 32), layers_per_block=1, attention_head_dim=8,
      cross_attention_dim=16, attention="low", num_train_timesteps=1000,
      beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
      num_steps=4, batch_size=8, learning_rate=1e-3, warmup_steps=2,
      weight_decay=0.0, cond_dropout=0.1, ema_decay=0.99))
  config.update(overrides)
  return config


def tiny_prior(num_classes=3, latent_shape=(5, 5, 2), seed=0, **overrides):
  """An untrained prior on odd-sided latents (padded to 6x6 for the UNet)."""
  config = tiny_config(**overrides)
  unet = model.build_unet(config, latent_shape)
  params = unet.init_weights(jax.random.key(seed))
  table = jax.random.normal(jax.random.key(seed + 1),
                            (num_classes + 1, config.cross_attention_dim))
  return model.Prior(unet=unet, params=params,
                     scheduler=model.build_scheduler(config),
                     context=table[:num_classes, None, :],
                     null_context=table[num_classes][None, :],
                     latent_shape=latent_shape,
                     class_names=tuple(f"c{i}" for i in range(num_classes)))


def tiny_latents(n=6, shape=(5, 5, 2), seed=0):
  gen = np.random.default_rng(seed)
  return (gen.standard_normal((n, *shape)).astype(np.float32),
          (np.arange(n) % 3).astype(np.int32))


@pytest.fixture(scope="module")
def prior():
  return tiny_prior()
