import os

import numpy as np
import pytest

from pqd_jax.data import pipeline, sources


@pytest.fixture
def source():
  gen = np.random.default_rng(0)
  images = gen.integers(0, 256, (23, 6, 5, 1), dtype=np.uint8)
  labels = np.arange(23) % 3
  return sources.ArraySource(images, labels, ("a", "b", "c"))


def test_class_indices_group_by_label(source):
  groups = pipeline.class_indices(source)
  assert [len(g) for g in groups] == [8, 8, 7]
  for label, g in enumerate(groups):
    assert np.all(source.labels[g] == label)


def test_resize_keeps_a_constant_image_constant():
  images = np.full((3, 16, 16, 2), 0.25, np.float32)
  out = pipeline.resize_images(images, 12, batch_size=2)
  assert out.shape == (3, 12, 12, 2)
  np.testing.assert_allclose(out, 0.25, atol=1e-6)


def test_resize_to_the_same_size_is_the_identity():
  images = np.random.default_rng(0).random((2, 8, 8, 1)).astype(np.float32)
  assert pipeline.resize_images(images, 8) is images


def test_resize_rejects_a_non_positive_size():
  with pytest.raises(ValueError, match="size must be >= 1"):
    pipeline.resize_images(np.zeros((1, 8, 8, 1), np.float32), 0)


def test_lazy_batch_holds_the_rows_of_the_batch_dataset(source):
  batched = pipeline.batch_dataset(source, 8, seed=3)
  records = pipeline.record_dataset(source, seed=3)
  for step in (0, 2, 5):  # 5 crosses into the third epoch
    lazy = pipeline.lazy_batch(records, step, 8, (6, 5, 1))
    np.testing.assert_array_equal(lazy["image"][:], batched[step]["image"])
    np.testing.assert_array_equal(lazy["label"][2:7],
                                  batched[step]["label"][2:7])


class _CountingSource(sources.ArraySource):
  reads = 0

  def __getitem__(self, index):
    type(self).reads += 1
    return super().__getitem__(index)


def test_lazy_batch_reads_only_the_rows_indexed(source):
  counting = _CountingSource(source.images, source.labels, ("a", "b", "c"))
  records = pipeline.record_dataset(counting, seed=0)
  lazy = pipeline.lazy_batch(records, 1, 8, (6, 5, 1))
  _CountingSource.reads = 0
  lazy["image"][2:5]
  lazy["image"][5:6]
  lazy["label"][2:5]  # rows already read for "image"
  lazy["label"][5:6]
  assert _CountingSource.reads == 4


# ------------------------------------------------------------ read-ahead ---


@pytest.fixture(scope="module")
def jpeg_source(tmp_path_factory):
  """A tfds array_record dataset of 11 JPEGs, read resized to 16² RGB."""
  import tensorflow_datasets as tfds
  from PIL import Image

  d = str(tmp_path_factory.mktemp("jpegs"))

  # Not registered: the source opens it by name from its files, as grain's
  # workers then do (a test-local builder class cannot be unpickled there).
  class PqdPrefetchJpegs(tfds.core.GeneratorBasedBuilder,
                         skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features
                                   .FeaturesDict({
          "image": tfds.features.Image(shape=(30, 40, 3),
                                       encoding_format="jpeg"),
          "label": tfds.features.ClassLabel(names=["a", "b", "c"])}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      gen = np.random.default_rng(0)
      for i in range(11):
        path = os.path.join(d, f"{i}.jpg")
        Image.fromarray(gen.integers(0, 256, (30, 40, 3), np.uint8)).save(
            path)
        yield i, {"image": path, "label": i % 3}

  PqdPrefetchJpegs(data_dir=d, file_format="array_record"
                   ).download_and_prepare()
  return sources.TfdsSource("pqd_prefetch_jpegs", "train", data_dir=d,
                            image_size=16, channels=3)


def test_split_batches_cuts_consecutive_batches():
  got = pipeline.split_batches([5, 1, 4, 2, 3], 2)
  assert [b.tolist() for b in got] == [[5, 1], [4, 2], [3]]
  assert pipeline.split_batches([], 3) == []
  with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
    pipeline.split_batches([1], 0)


def test_prefetched_batches_are_the_source_records_in_order(source):
  order = np.random.default_rng(1).permutation(len(source))
  batches = pipeline.split_batches(order, 5)
  got = list(pipeline.prefetch_batches(source, batches, prefetch=1))
  assert len(got) == len(batches)
  for batch, idx in zip(got, batches, strict=True):
    np.testing.assert_array_equal(batch.indices, idx)
    np.testing.assert_array_equal(batch.labels, source.labels[idx])
    assert batch.labels.dtype == np.int32 and batch.positions is None
    np.testing.assert_array_equal(batch.images, source.read(idx))
  rows = pipeline.unit_rows(got[:2], source, (6, 5, 1), size=12)
  np.testing.assert_array_equal(
      rows[3:12], np.concatenate([pipeline.to_unit_range(
          source.read(order[3:10])), np.zeros((2, 6, 5, 1), np.float32)]))


class _CountingReads(sources.ArraySource):
  rows = 0

  def read(self, indices=None):
    out = super().read(indices)
    type(self).rows += len(out)
    return out


def test_rows_not_decoded_ahead_are_read_when_indexed(source):
  counting = _CountingReads(source.images, source.labels, ("a", "b", "c"))
  idx = np.arange(3, 11)
  batch = next(pipeline.prefetch_batches(counting, [idx],
                                         rows=lambda k: np.array([1, 2, 6])))
  np.testing.assert_array_equal(batch.positions, [1, 2, 6])
  np.testing.assert_array_equal(batch.images, source.read(idx[[1, 2, 6]]))
  _CountingReads.rows = 0
  np.testing.assert_array_equal(batch.unit_rows(counting, 1, 3),
                                pipeline.to_unit_range(source.read(idx[1:3])))
  assert _CountingReads.rows == 0  # decoded ahead
  np.testing.assert_array_equal(batch.unit_rows(counting, 0, 8),
                                pipeline.to_unit_range(source.read(idx)))
  assert _CountingReads.rows == 5  # the rows not decoded ahead


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_workers=-1), "num_workers must be >= 0, got -1"),
    (dict(prefetch=0), "prefetch must be >= 1, got 0"),
])
def test_prefetch_refuses_bad_settings(source, kwargs, message):
  with pytest.raises(ValueError, match=message):
    next(pipeline.prefetch_batches(source, [np.arange(3)], **kwargs))


def test_jpeg_batches_are_identical_with_0_and_2_workers(jpeg_source):
  order = np.random.default_rng(0).permutation(len(jpeg_source))
  batches = pipeline.split_batches(order, 3)
  runs = [list(pipeline.prefetch_batches(jpeg_source, batches,
                                         num_workers=workers))
          for workers in (0, 2)]
  assert [len(r) for r in runs] == [4, 4]
  for a, b, idx in zip(*runs, batches, strict=True):
    np.testing.assert_array_equal(a.indices, idx)
    np.testing.assert_array_equal(b.indices, idx)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.images.dtype == b.images.dtype == np.uint8
    assert a.images.shape == (len(idx), 16, 16, 3)
    np.testing.assert_array_equal(a.images, b.images)  # bitwise
    np.testing.assert_array_equal(a.images, jpeg_source.read(idx))


class _Device:

  def __init__(self, process_index):
    self.process_index = process_index


class _Mesh:
  """Four "data" shards on two processes of two devices each."""

  devices = np.array([_Device(p) for p in (0, 0, 1, 1)], dtype=object)
  shape = {"data": 4}


def test_process_rows_are_the_rows_of_this_process_devices(monkeypatch):
  assert pipeline.process_rows(6, 8) is None  # one process: every row
  np.testing.assert_array_equal(pipeline.process_rows(6, 8, _Mesh()),
                                [0, 1, 2, 3])
  monkeypatch.setattr(pipeline.jax, "process_index", lambda: 1)
  # Shards 2 and 3: rows 4 to 7 of the 8, of which the batch has 4 and 5.
  np.testing.assert_array_equal(pipeline.process_rows(6, 8, _Mesh()), [4, 5])
  # Padding past 5 rows repeats row 4 (shard_batch) or is zeros.
  np.testing.assert_array_equal(
      pipeline.process_rows(5, 8, _Mesh(), repeat_last=True), [4])
  assert pipeline.process_rows(4, 8, _Mesh()).size == 0
  np.testing.assert_array_equal(
      pipeline.process_rows(4, 8, _Mesh(), repeat_last=True), [3])


def test_device_pieces_are_each_device_rows_of_map_batches(monkeypatch):
  # One device: the batches of 4 rows, all this process's.
  assert pipeline.device_pieces(10, 4) == [(0, 4, None), (4, 8, None),
                                           (8, 10, None)]
  # Four shards: batches of 8 (4 rounded up), 2 rows a device; padding
  # pieces past the 11 rows are left out.
  pieces = pipeline.device_pieces(11, 5, _Mesh())
  assert [(a, b) for a, b, _ in pieces] == [(0, 2), (2, 4), (4, 6), (6, 8),
                                            (8, 10), (10, 11)]
  mine = [rows is None for _, _, rows in pieces]
  assert mine == [True, True, False, False, True, True]
  assert all(rows.size == 0 for _, _, rows in pieces if rows is not None)
  monkeypatch.setattr(pipeline.jax, "process_index", lambda: 1)
  assert [rows is None for _, _, rows in pipeline.device_pieces(
      11, 5, _Mesh())] == [False, False, True, True, False, False]
