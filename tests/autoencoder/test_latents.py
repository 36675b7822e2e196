import os
import re

import jax
import numpy as np
import pytest

import pqd_jax
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


def test_a_killed_encode_resumes_after_its_finished_classes(
    ae, source, tmp_path, monkeypatch):
  first = latents.encode_source(ae, source, str(tmp_path), progress=False)
  z_first, _ = latents.load(str(tmp_path))
  # A kill after class 0: class 1 and the index were never written.
  (tmp_path / "index.json").unlink()
  (tmp_path / "class_00001.npy").unlink()
  encoded = []
  encode = model_lib.encode
  monkeypatch.setattr(model_lib, "encode", lambda ae, images, **kw: (
      encoded.append(len(images)), encode(ae, images, **kw))[1])
  assert latents.encode_source(ae, source, str(tmp_path),
                               progress=False) == first
  assert encoded == [9]  # class 1 only; 0 and 2 were whole
  np.testing.assert_array_equal(latents.load(str(tmp_path))[0], z_first)


def test_a_class_file_cut_short_is_encoded_again(ae, source, tmp_path,
                                                 monkeypatch):
  latents.encode_source(ae, source, str(tmp_path), progress=False)
  path = tmp_path / "class_00002.npy"
  path.write_bytes(path.read_bytes()[:100])
  encoded = []
  encode = model_lib.encode
  monkeypatch.setattr(model_lib, "encode", lambda ae, images, **kw: (
      encoded.append(len(images)), encode(ae, images, **kw))[1])
  latents.encode_source(ae, source, str(tmp_path), progress=False)
  assert encoded == [7]
  assert latents.problem(str(tmp_path)) == ""


def test_float16_storage(ae, source, tmp_path):
  latents.encode_source(ae, source, str(tmp_path), progress=False)
  z, _ = latents.load(str(tmp_path))
  assert z.dtype == np.float16


def test_stream_feeds_quantize_stream_without_dropping(ae, source, tmp_path):
  latents.encode_source(ae, source, str(tmp_path), progress=False)
  out = pqd_jax.quantize_stream(latents.stream(str(tmp_path), chunk=4), 3,
                                batch_size=8)
  np.testing.assert_array_equal(np.asarray(out.counts).sum(1), [14, 9, 7])


def test_stream_chunks_run_across_class_files(tmp_path):
  z, labels = _saved(tmp_path)  # classes of 14, 9 and 7 rows
  chunks = list(latents.stream(str(tmp_path), chunk=10)())
  assert [len(x) for x, _ in chunks] == [10, 10, 10]
  np.testing.assert_array_equal(np.concatenate([x for x, _ in chunks]), z)
  np.testing.assert_array_equal(np.concatenate([y for _, y in chunks]),
                                labels)


def test_stream_of_chosen_classes_reads_them_in_that_order(tmp_path):
  z, labels = _saved(tmp_path)
  chunks = list(latents.stream(str(tmp_path), chunk=10, classes=[2, 0])())
  order = np.concatenate([np.flatnonzero(labels == 2),
                          np.flatnonzero(labels == 0)])
  np.testing.assert_array_equal(np.concatenate([x for x, _ in chunks]),
                                z[order])
  np.testing.assert_array_equal(np.concatenate([y for _, y in chunks]),
                                labels[order])


@pytest.mark.parametrize("dtype", [None, "float16"])
def test_stream_chunks_fit_in_chunk_bytes_by_default(tmp_path, monkeypatch,
                                                     dtype):
  _saved(tmp_path)  # 30 float32 rows of 6 entries: 24 bytes
  monkeypatch.setattr(latents, "CHUNK_BYTES", 100)
  sizes = [len(x) for x, _ in latents.stream(str(tmp_path), dtype=dtype)()]
  assert sizes == [4] * 7 + [2]


@pytest.mark.parametrize("dtype", [None, "float16"])
def test_stream_chunks_are_frozen(tmp_path, dtype):
  _saved(tmp_path)
  for x, _ in latents.stream(str(tmp_path), chunk=10, dtype=dtype)():
    assert sharding.frozen(x)


def test_stream_chunks_are_aligned_for_the_device(tmp_path):
  _saved(tmp_path)
  for x, _ in latents.stream(str(tmp_path), chunk=10)():
    assert sharding.host_aligned(x)


def test_stream_gives_the_requested_dtype(tmp_path):
  z, _ = _saved(tmp_path)
  chunks = list(latents.stream(str(tmp_path), chunk=10, dtype="float16")())
  assert {x.dtype for x, _ in chunks} == {np.dtype(np.float16)}
  np.testing.assert_array_equal(np.concatenate([x for x, _ in chunks]),
                                z.astype(np.float16))


def test_missing_artefact(tmp_path):
  with pytest.raises(FileNotFoundError, match="No complete latents"):
    latents.load(str(tmp_path))


def test_bad_dtype(ae, source, tmp_path):
  with pytest.raises(ValueError, match="dtype must be one of"):
    latents.encode_source(ae, source, str(tmp_path), dtype="int8")


def _saved(tmp_path, dtype="float32"):
  gen = np.random.default_rng(0)
  z = gen.normal(size=(30, 3, 2)).astype(np.float32)
  labels = np.repeat([0, 1, 2], [14, 9, 7])
  latents.save(str(tmp_path), z, labels, ["x", "y", "z"], dtype=dtype)
  return z, labels


def _remake(tmp_path):
  return (f"delete {re.escape(str(tmp_path))} and run again: the stage "
          "makes it again")


# Every reader of the class files, reading all of them.
READERS = {
    "load": lambda d: latents.load(d),
    "load_lazy": lambda d: latents.load(d, lazy=True)[0][:],
    "stream": lambda d: list(latents.stream(d)()),
}


@pytest.mark.parametrize("reader", READERS)
def test_a_truncated_class_file_is_named(tmp_path, reader):
  _saved(tmp_path)
  path = tmp_path / "class_00001.npy"
  os.truncate(path, os.path.getsize(path) // 2)
  with pytest.raises(ValueError, match=rf"cannot read {re.escape(str(path))}"
                     rf": cut short.*; {_remake(tmp_path)}"):
    READERS[reader](str(tmp_path))


@pytest.mark.parametrize("reader", READERS)
def test_a_class_file_cut_in_its_header_is_named(tmp_path, reader):
  _saved(tmp_path)
  os.truncate(tmp_path / "class_00002.npy", 40)
  with pytest.raises(ValueError, match=r"class_00002.npy: ValueError: EOF"):
    READERS[reader](str(tmp_path))


@pytest.mark.parametrize("reader", READERS)
def test_counts_that_disagree_with_a_class_file_are_an_error(tmp_path,
                                                              reader):
  z, _ = _saved(tmp_path)
  np.save(tmp_path / "class_00001.npy", z[:7])  # the index counts 9
  with pytest.raises(ValueError, match=r"class_00001.npy: it holds 7 "
                     r"float32 latents of shape \(3, 2\), index.json counts "
                     rf"9 float32 .*; {_remake(tmp_path)}"):
    READERS[reader](str(tmp_path))


@pytest.mark.parametrize("reader", READERS)
def test_a_class_file_of_another_dtype_is_an_error(tmp_path, reader):
  z, _ = _saved(tmp_path)
  np.save(tmp_path / "class_00001.npy", z[:9].astype(np.float64))
  with pytest.raises(ValueError, match=r"class_00001.npy: it holds 9 "
                     r"float64 latents .* counts 9 float32"):
    READERS[reader](str(tmp_path))


@pytest.mark.parametrize("reader", READERS)
def test_a_truncated_index_is_named(tmp_path, reader):
  _saved(tmp_path)
  path = tmp_path / "index.json"
  os.truncate(path, os.path.getsize(path) // 2)
  with pytest.raises(ValueError, match=rf"cannot read {re.escape(str(path))}"
                     rf": JSONDecodeError.*; {_remake(tmp_path)}"):
    READERS[reader](str(tmp_path))


def test_an_index_without_counts_is_named(tmp_path):
  _saved(tmp_path)
  (tmp_path / "index.json").write_text('{"latent_shape": [3, 2]}')
  with pytest.raises(ValueError, match=r"index.json: KeyError: 'counts'"):
    latents.read_index(str(tmp_path))


def test_a_count_mismatch_is_a_problem_the_cache_remakes(tmp_path):
  z, _ = _saved(tmp_path)
  np.save(tmp_path / "class_00001.npy", z[:7])
  assert latents.problem(str(tmp_path)) == (
      "class_00001.npy: it holds 7 float32 latents of shape (3, 2), "
      "index.json counts 9 float32 of shape (3, 2)")


def test_save_then_load_gives_the_latents(tmp_path):
  z, labels = _saved(tmp_path)
  loaded, loaded_labels = latents.load(str(tmp_path))
  np.testing.assert_array_equal(loaded, z)
  np.testing.assert_array_equal(loaded_labels, labels)


def test_save_refuses_an_empty_class(tmp_path):
  with pytest.raises(ValueError, match=r"class 2 \('z'\) has no latents"):
    latents.save(str(tmp_path), np.zeros((4, 2)), np.array([0, 1, 0, 1]),
                 ["x", "y", "z"])


@pytest.mark.parametrize("labels", [[0, 0, 0, 1, 1, 2], [0, 0, -1, 1, 1, 0]])
def test_save_refuses_labels_without_a_class_name(tmp_path, labels):
  with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
    latents.save(str(tmp_path), np.zeros((6, 2)), np.array(labels),
                 ["a", "b"])


def test_save_refuses_nan_latents(tmp_path):
  z = np.zeros((4, 2))
  z[1, 1] = np.nan
  with pytest.raises(ValueError, match="latents contain NaN or Inf"):
    latents.save(str(tmp_path), z, np.array([0, 0, 1, 1]), ["a", "b"])


def test_save_refuses_fractional_labels(tmp_path):
  with pytest.raises(ValueError, match="labels must be integers"):
    latents.save(str(tmp_path), np.zeros((4, 2)),
                 np.array([0, 0.5, 1, 1]), ["a", "b"])


def test_save_refuses_values_beyond_float16(tmp_path):
  z = np.full((4, 2), 1e5)
  with pytest.raises(ValueError, match="beyond float16's range"):
    latents.save(str(tmp_path), z, np.array([0, 0, 1, 1]), ["a", "b"])


@pytest.mark.parametrize("dtype", ["bogus", "int32"])
def test_load_refuses_a_dtype_that_is_not_floating(tmp_path, dtype):
  _saved(tmp_path)
  with pytest.raises(ValueError, match="dtype must be a floating dtype"):
    latents.load(str(tmp_path), dtype=dtype)


@pytest.mark.parametrize("kwargs,message", [
    ({"chunk": 2.5}, "chunk must be an integer"),
    ({"classes": ["x"]}, "are not integer labels"),
    ({"dtype": "bogus"}, "dtype must be a floating dtype"),
])
def test_stream_refuses_bad_arguments(tmp_path, kwargs, message):
  _saved(tmp_path)
  with pytest.raises(ValueError, match=message):
    latents.stream(str(tmp_path), **kwargs)


@pytest.mark.parametrize("start,stop", [(0, 30), (3, 20), (14, 23), (29, 30),
                                        (30, 30)])
def test_lazy_rows_span_the_class_files(tmp_path, start, stop):
  z, _ = _saved(tmp_path)
  lazy, _ = latents.load(str(tmp_path), lazy=True)
  assert lazy.shape == z.shape and lazy.dtype == z.dtype
  np.testing.assert_array_equal(lazy[start:stop], z[start:stop])


def test_quantize_of_lazy_latents_equals_in_memory(tmp_path):
  z, labels = _saved(tmp_path, dtype="float16")
  lazy, _ = latents.load(str(tmp_path), lazy=True, dtype="float32")
  a = pqd_jax.quantize(lazy, labels, 3, rng=jax.random.key(2))
  b = pqd_jax.quantize(z.astype(np.float16).astype(np.float32), labels, 3,
                       rng=jax.random.key(2))
  np.testing.assert_array_equal(np.asarray(a.centroids),
                                np.asarray(b.centroids))
  np.testing.assert_array_equal(np.asarray(a.counts), np.asarray(b.counts))


def test_nan_in_lazy_latents_is_refused_with_its_row(tmp_path):
  _, labels = _saved(tmp_path)
  # save() refuses NaN; a class file corrupted on disk has it: row 17 is
  # row 3 of class 1, in class_00001.npy of the documented layout.
  stored = np.load(tmp_path / "class_00001.npy", mmap_mode="r+")
  stored[3, 1, 0] = np.nan
  stored.flush()
  del stored
  lazy, _ = latents.load(str(tmp_path), lazy=True)
  with pytest.raises(ValueError, match=r"NaN or Inf in 1 rows \(first rows: "
                     r"\[17\]\)"):
    pqd_jax.quantize(lazy, labels, 3)


def test_encode_of_lazy_rows_equals_the_array(ae, source):
  images = pipeline.to_unit_range(source.read())
  reads = []

  def read(start, stop):
    reads.append((start, stop))
    return images[start:stop]

  lazy = model_lib.encode(
      ae, sharding.LazyRows(read, images.shape, images.dtype),
      batch_size=8)
  np.testing.assert_array_equal(lazy, model_lib.encode(ae, images,
                                                       batch_size=8))
  assert sum(b - a for a, b in reads) == len(images)  # padding is not read
