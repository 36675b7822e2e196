import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from pqd_jax.prior import model
from pqd_jax.prior import train as train_lib
from tests.prior.conftest import tiny_config, tiny_latents


def _blob_latents(n=32):
  """Two classes of structured latents: easy to denoise."""
  gen = np.random.default_rng(0)
  y = np.arange(n) % 2
  base = np.stack([np.linspace(-1, 1, 32).reshape(4, 4, 2),
                   np.linspace(1, -1, 32).reshape(4, 4, 2)])
  z = base[y] + 0.05 * gen.standard_normal((n, 4, 4, 2))
  return z.astype(np.float32), y


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_training_steps_reduce_the_loss(prediction_type):
  config = tiny_config(prediction_type=prediction_type)
  unet = model.build_unet(config, (4, 4, 2))
  scheduler = model.build_scheduler(config)
  z, y = _blob_latents()
  x0 = jnp.transpose(jnp.asarray(z), (0, 3, 1, 2))
  params = {"unet": unet.init_weights(jax.random.key(0)),
            "class_embedding": jnp.zeros((3, 16))}
  tx = optax.adam(3e-3)
  state = train_lib.PriorState(step=jnp.zeros((), jnp.int32), params=params,
                               ema_params=jax.tree.map(jnp.copy, params),
                               opt_state=tx.init(params))
  loss = lambda p: float(train_lib.denoising_loss(
      p, unet, scheduler, x0, jnp.asarray(y), jax.random.key(123),
      num_classes=2, cond_dropout=0.1))
  before = loss(params)
  for i in range(40):
    state, _ = train_lib.train_step(
        state, {"latent": x0, "label": jnp.asarray(y)}, jax.random.key(i),
        unet=unet, scheduler=scheduler, tx=tx, num_classes=2,
        cond_dropout=0.1, ema_decay=0.9)
  assert loss(state.params) < 0.7 * before


def test_ema_follows_the_parameters():
  config = tiny_config()
  unet = model.build_unet(config, (4, 4, 2))
  scheduler = model.build_scheduler(config)
  z, y = _blob_latents(8)
  x0 = jnp.transpose(jnp.asarray(z), (0, 3, 1, 2))
  params = {"unet": unet.init_weights(jax.random.key(0)),
            "class_embedding": jnp.zeros((3, 16))}
  tx = optax.sgd(1e-2)
  before = jax.tree.map(np.asarray, params)  # the state's buffers are donated
  state = train_lib.PriorState(step=jnp.zeros((), jnp.int32), params=params,
                               ema_params=jax.tree.map(jnp.copy, params),
                               opt_state=tx.init(params))
  state, _ = train_lib.train_step(
      state, {"latent": x0, "label": jnp.asarray(y)}, jax.random.key(0),
      unet=unet, scheduler=scheduler, tx=tx, num_classes=2, cond_dropout=0.0,
      ema_decay=0.999)
  # Step 0: decay = min(0.999, 1 / 10) = 0.1.
  for e, p, q in zip(jax.tree.leaves(state.ema_params),
                     jax.tree.leaves(state.params),
                     jax.tree.leaves(before), strict=True):
    np.testing.assert_allclose(np.asarray(e), 0.1 * np.asarray(q)
                               + 0.9 * np.asarray(p), atol=1e-6)


def _train(workdir, **overrides):
  z, y = tiny_latents(n=12)
  return train_lib.train_prior(z, y, workdir, config=tiny_config(**overrides),
                               class_names=("a", "b", "c"), progress=False)


def test_train_prior_saves_a_loadable_prior(tmp_path):
  prior = _train(str(tmp_path))
  loaded = model.load_prior(str(tmp_path / "final"))
  for a, b in zip(jax.tree.leaves(prior.params), jax.tree.leaves(loaded.params),
                  strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert loaded.context.shape == (3, 1, 16)
  assert loaded.null_context.shape == (1, 16)


def test_a_finished_prior_is_loaded_without_its_checkpoints(tmp_path):
  first = _train(str(tmp_path))
  shutil.rmtree(tmp_path / "ckpt")
  again = _train(str(tmp_path))
  np.testing.assert_array_equal(np.asarray(first.context),
                                np.asarray(again.context))
  assert not (tmp_path / "ckpt").exists()


def test_training_longer_resumes(tmp_path):
  _train(str(tmp_path), num_steps=2)
  _train(str(tmp_path), num_steps=4)
  assert model.read_metadata(str(tmp_path / "final")) == {"num_steps": 4}


def test_another_config_in_the_same_workdir_is_refused(tmp_path):
  _train(str(tmp_path))
  with pytest.raises(ValueError, match="different config.*cond_dropout"):
    _train(str(tmp_path), cond_dropout=0.2)


def test_labels_out_of_range_are_refused(tmp_path):
  z, _ = tiny_latents(n=4)
  with pytest.raises(ValueError,
                     match=r"labels must be 4 integers in \[0, 3\)"):
    train_lib.train_prior(z, np.array([0, 1, 2, 5]), str(tmp_path),
                          config=tiny_config(), class_names=("a", "b", "c"))


def test_lazy_latents_train_the_same_prior(tmp_path):
  from pqd_jax.autoencoder import latents as latents_lib

  z, y = tiny_latents(12)
  latents_lib.save(str(tmp_path / "latents"), z, y, ["a", "b", "c"],
                   dtype="float32")
  lazy, lazy_y = latents_lib.load(str(tmp_path / "latents"), lazy=True)
  order = np.argsort(y, kind="stable")  # the artefact is class-major
  eager = train_lib.train_prior(z[order], y[order], str(tmp_path / "eager"),
                                config=tiny_config(num_steps=2),
                                class_names=("a", "b", "c"), progress=False)
  lazy_prior = train_lib.train_prior(
      lazy, lazy_y, str(tmp_path / "lazy"), config=tiny_config(num_steps=2),
      class_names=("a", "b", "c"), progress=False)
  for a, b in zip(jax.tree.leaves(eager.params),
                  jax.tree.leaves(lazy_prior.params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
