import jax
import numpy as np
import pytest

import pqd_jax
from pqd_jax.autoencoder import latents
from pqd_jax.autoencoder import model as model_lib
from pqd_jax.data import pipeline, sources
from tests.autoencoder.conftest import tiny_config, tiny_images


@pytest.fixture(scope="module")
def ae():
  return model_lib.init_autoencoder(tiny_config(), jax.random.key(0))


@pytest.fixture
def source():
  images, _ = tiny_images(30)
  labels = np.repeat([0, 1, 2], [14, 9, 7])
  return sources.ArraySource(images, labels, ("x", "y", "z"))


def test_index_records_counts_and_names(ae, source, tmp_path):
  assert not latents.exists(str(tmp_path))
  index = latents.encode_source(ae, source, str(tmp_path), progress=False)
  assert latents.exists(str(tmp_path))
  assert index["counts"] == [14, 9, 7]
  assert index["class_names"] == ["x", "y", "z"]
  assert index["latent_shape"] == [4, 4, 2]


def test_stored_latents_are_the_encodings(ae, source, tmp_path):
  latents.encode_source(ae, source, str(tmp_path), dtype="float32",
                        progress=False)
  z, labels = latents.load(str(tmp_path))
  ref = model_lib.encode(ae, pipeline.to_unit_range(source.read()))
  np.testing.assert_array_equal(labels, source.labels)  # already class-major
  np.testing.assert_allclose(z, ref, rtol=1e-5, atol=1e-6)


def test_float16_storage(ae, source, tmp_path):
  latents.encode_source(ae, source, str(tmp_path), progress=False)
  z, _ = latents.load(str(tmp_path))
  assert z.dtype == np.float16


def test_stream_feeds_quantize_stream_without_dropping(ae, source, tmp_path):
  latents.encode_source(ae, source, str(tmp_path), progress=False)
  out = pqd_jax.quantize_stream(latents.stream(str(tmp_path), chunk=4), 3,
                                batch_size=8)
  np.testing.assert_array_equal(np.asarray(out.counts).sum(1), [14, 9, 7])


def test_missing_artefact(tmp_path):
  with pytest.raises(FileNotFoundError, match="No complete latents"):
    latents.load(str(tmp_path))


def test_bad_dtype(ae, source, tmp_path):
  with pytest.raises(ValueError, match="dtype must be one of"):
    latents.encode_source(ae, source, str(tmp_path), dtype="int8")
