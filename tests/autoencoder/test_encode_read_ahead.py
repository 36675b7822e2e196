"""encode_source reading its images ahead: the latents of the old loop."""

import jax
import numpy as np
import pytest

from pqd_jax import sharding
from pqd_jax.autoencoder import latents
from pqd_jax.autoencoder import model as model_lib
from pqd_jax.data import pipeline, sources
from tests.autoencoder.conftest import tiny_config, tiny_images


@pytest.fixture(scope="module")
def ae():
  return model_lib.init_autoencoder(tiny_config(), jax.random.key(0))


@pytest.fixture
def source():
  images, _ = tiny_images(40)
  labels = np.random.default_rng(1).permutation(np.repeat([0, 1, 2],
                                                          [19, 16, 5]))
  return sources.ArraySource(images, labels, ("x", "y", "z"))


def _sequential(ae, source, batch_size, rng):
  """The encode loop before read-ahead: each chunk read when encoded."""
  out = []
  for label, idx in enumerate(pipeline.class_indices(source)):
    for s in range(0, len(idx), 4 * batch_size):
      part = idx[s:s + 4 * batch_size]
      images = sharding.LazyRows(
          lambda a, b, part=part: pipeline.to_unit_range(
              source.read(part[a:b])), (len(part), 8, 8, 1), np.float32)
      out.append(model_lib.encode(
          ae, images, sample=True, batch_size=batch_size,
          rng=jax.random.fold_in(jax.random.fold_in(rng, label), s)))
  return np.concatenate(out)


@pytest.mark.parametrize("batch_size", [2, 3])
def test_latents_are_bitwise_those_of_the_sequential_loop(ae, source,
                                                          tmp_path,
                                                          batch_size):
  rng = jax.random.key(7)
  latents.encode_source(ae, source, str(tmp_path), dtype="float32",
                        sample=True, rng=rng, batch_size=batch_size,
                        progress=False, prefetch=1)
  np.testing.assert_array_equal(latents.load(str(tmp_path))[0],
                                _sequential(ae, source, batch_size, rng))


def test_finished_classes_are_not_read_again(ae, source, tmp_path,
                                             monkeypatch):
  latents.encode_source(ae, source, str(tmp_path), progress=False)
  z = latents.load(str(tmp_path))[0]
  (tmp_path / "index.json").unlink()
  (tmp_path / "class_00001.npy").unlink()
  read = []
  batches = pipeline.prefetch_batches
  monkeypatch.setattr(pipeline, "prefetch_batches", lambda src, b, **kw: (
      read.extend(np.concatenate(list(b)).tolist()), batches(src, b, **kw))[1])
  latents.encode_source(ae, source, str(tmp_path), progress=False)
  assert sorted(read) == np.flatnonzero(source.labels == 1).tolist()
  np.testing.assert_array_equal(latents.load(str(tmp_path))[0], z)


def test_a_whole_file_of_another_shape_is_encoded_again(ae, source,
                                                        tmp_path):
  latents.encode_source(ae, source, str(tmp_path), dtype="float32",
                        progress=False)
  z = latents.load(str(tmp_path))[0]
  # Class 2's file has its count of rows but not the latent shape of the
  # classes before it: it is encoded again (its images read when indexed).
  np.save(tmp_path / "class_00002.npy", np.zeros((5, 2, 2, 2), np.float32))
  (tmp_path / "index.json").unlink()
  latents.encode_source(ae, source, str(tmp_path), dtype="float32",
                        progress=False)
  np.testing.assert_array_equal(latents.load(str(tmp_path))[0], z)
