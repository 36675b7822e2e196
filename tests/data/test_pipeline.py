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
