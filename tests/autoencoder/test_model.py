import os
import re

import jax
import numpy as np
import pytest

from pqd_jax.autoencoder import model as model_lib
from tests.autoencoder.conftest import tiny_config
from tests.conftest import run_on_fake_devices


@pytest.fixture(scope="module")
def ae():
  return model_lib.init_autoencoder(tiny_config(), jax.random.key(0))


@pytest.fixture
def images():
  return np.asarray(jax.random.uniform(jax.random.key(1), (5, 8, 8, 1),
                                       minval=-1, maxval=1))


def test_encode_decode_shapes(ae, images):
  z = model_lib.encode(ae, images)
  assert z.shape == (5, 4, 4, 2) and z.dtype == np.float32
  assert model_lib.decode(ae, z).shape == (5, 8, 8, 1)


def test_posterior_mean_is_deterministic(ae, images):
  np.testing.assert_array_equal(model_lib.encode(ae, images),
                                model_lib.encode(ae, images))


def test_samples_depend_on_the_key(ae, images):
  a = model_lib.encode(ae, images, sample=True, rng=jax.random.key(1))
  b = model_lib.encode(ae, images, sample=True, rng=jax.random.key(2))
  assert not np.allclose(a, b)


def test_scaling_factor_scales_latents(ae, images):
  scaled = ae._replace(scaling_factor=2.5)
  np.testing.assert_allclose(model_lib.encode(scaled, images),
                             2.5 * model_lib.encode(ae, images), rtol=1e-6)


def test_batching_does_not_change_results(ae, images):
  np.testing.assert_allclose(model_lib.encode(ae, images, batch_size=2),
                             model_lib.encode(ae, images), rtol=1e-5,
                             atol=1e-6)


def test_pretrained_round_trip(ae, images, tmp_path):
  trained = ae._replace(scaling_factor=0.37)
  model_lib.save_pretrained(trained, str(tmp_path / "vae"))
  loaded = model_lib.load_pretrained(str(tmp_path / "vae"))
  assert loaded.scaling_factor == pytest.approx(0.37)
  leaves = zip(jax.tree.leaves(trained.params), jax.tree.leaves(loaded.params),
               strict=True)
  assert all(np.array_equal(a, b) for a, b in leaves)
  np.testing.assert_array_equal(model_lib.encode(loaded, images),
                                model_lib.encode(trained, images))


def test_pretrained_from_a_subfolder(ae, tmp_path):
  model_lib.save_pretrained(ae, str(tmp_path / "sd" / "vae"))
  loaded = model_lib.load_pretrained(str(tmp_path / "sd"), subfolder="vae")
  assert loaded.model.config.latent_channels == 2


DAMAGED = ("the checkpoint is truncated or corrupt: save, copy or download "
           "it again")


@pytest.mark.parametrize("name,reason", [
    ("config.json", "JSONDecodeError"),
    ("diffusion_flax_model.msgpack", "ValueError: Unpack failed"),
])
def test_a_truncated_checkpoint_file_is_named(ae, tmp_path, name, reason):
  model_lib.save_pretrained(ae, str(tmp_path))
  path = tmp_path / name
  os.truncate(path, os.path.getsize(path) // 2)
  with pytest.raises(ValueError, match=rf"cannot read {re.escape(str(path))}"
                     rf": {reason}.*; {DAMAGED}$"):
    model_lib.load_pretrained(str(tmp_path))


def test_weights_that_are_not_msgpack_are_named(ae, tmp_path):
  model_lib.save_pretrained(ae, str(tmp_path))
  (tmp_path / "diffusion_flax_model.msgpack").write_bytes(b"\xc1garbage")
  with pytest.raises(ValueError, match=r"diffusion_flax_model.msgpack: "
                     rf"FormatError; {DAMAGED}"):
    model_lib.load_pretrained(str(tmp_path))


def test_weights_with_trailing_bytes_are_named(ae, tmp_path):
  model_lib.save_pretrained(ae, str(tmp_path))
  with open(tmp_path / "diffusion_flax_model.msgpack", "ab") as f:
    f.write(b"\x01\x02\x03")
  with pytest.raises(ValueError, match=r"diffusion_flax_model.msgpack: "
                     rf"OSError: Unable to convert.*; {DAMAGED}"):
    model_lib.load_pretrained(str(tmp_path))


class TestBadInput:

  def test_missing_pretrained_directory(self, tmp_path):
    with pytest.raises(FileNotFoundError, match="No pretrained autoencoder"):
      model_lib.load_pretrained(str(tmp_path / "nothing"))

  def test_directory_without_a_model(self, tmp_path):
    with pytest.raises(FileNotFoundError, match="Could not load"):
      model_lib.load_pretrained(str(tmp_path))

  def test_a_directory_with_a_weights_file_but_no_config(self, ae,
                                                        tmp_path):
    model_lib.save_pretrained(ae, str(tmp_path))
    os.remove(tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="Could not load"):
      model_lib.load_pretrained(str(tmp_path))

  def test_wrong_channels(self, ae):
    with pytest.raises(ValueError, match=r"\[b, h, w, 1\].*\(5, 8, 8, 3\)"):
      model_lib.encode(ae, np.zeros((5, 8, 8, 3), np.float32))

  def test_wrong_rank(self, ae):
    with pytest.raises(ValueError, match="NHWC"):
      model_lib.encode(ae, np.zeros((8, 8, 1), np.float32))

  def test_side_not_divisible(self, ae):
    with pytest.raises(ValueError, match="divisible by 2"):
      model_lib.encode(ae, np.zeros((1, 7, 7, 1), np.float32))

  def test_wrong_latent_channels(self, ae):
    with pytest.raises(ValueError, match=r"latents must have shape"):
      model_lib.decode(ae, np.zeros((1, 4, 4, 3), np.float32))

  def test_groups_must_divide_channels(self):
    with pytest.raises(ValueError, match="multiples of norm_num_groups"):
      model_lib.build(tiny_config(block_out_channels=(6, 8)))


_SHARDED = """
import jax, numpy as np
from pqd_jax import sharding
from pqd_jax.autoencoder import model as model_lib
from tests.autoencoder.conftest import tiny_config
assert jax.device_count() == 4
ae = model_lib.init_autoencoder(tiny_config(), jax.random.key(0))
x = np.asarray(jax.random.uniform(jax.random.key(1), (10, 8, 8, 1),
                                  minval=-1, maxval=1))
one = model_lib.encode(ae, x, mesh=sharding.data_mesh(jax.devices()[:1]))
four = model_lib.encode(ae, x, batch_size=6)  # rounded up to 8, padded
np.testing.assert_allclose(one, four, rtol=1e-5, atol=1e-6)
back = model_lib.decode(ae, four)
assert back.shape == (10, 8, 8, 1)
print("ok")
"""


def test_encode_sharded_over_four_devices_matches_one():
  assert run_on_fake_devices(_SHARDED).strip().endswith("ok")
