import numpy as np
import pytest

from pqd_jax.data import pipeline, sources


@pytest.fixture
def source():
  gen = np.random.default_rng(0)
  images = gen.integers(0, 256, (23, 6, 5, 1), dtype=np.uint8)
  labels = np.arange(23) % 3
  return sources.ArraySource(images, labels, ("a", "b", "c"))


def _collect(it):
  return [b["label"].tolist() for b in it]


def test_one_epoch_visits_every_record_once(source):
  seen = np.concatenate([b["label"] for b in pipeline.batches(source, 5)])
  np.testing.assert_array_equal(np.sort(seen), np.sort(source.labels))


def test_same_seed_same_order(source):
  assert (_collect(pipeline.batches(source, 4, seed=3))
          == _collect(pipeline.batches(source, 4, seed=3)))


def test_different_seed_different_order(source):
  assert (_collect(pipeline.batches(source, 23, seed=3))
          != _collect(pipeline.batches(source, 23, seed=4)))


def test_images_are_in_minus_one_one(source):
  batch = next(pipeline.batches(source, 23, shuffle=False))
  assert batch["image"].dtype == np.float32
  np.testing.assert_allclose(batch["image"],
                             source.images / 127.5 - 1.0, atol=1e-6)


def test_drop_remainder(source):
  sizes = [len(b["label"]) for b in pipeline.batches(source, 5,
                                                     drop_remainder=True)]
  assert sizes == [5, 5, 5, 5]


def test_augmentation_is_deterministic_for_a_seed(source):
  a = next(pipeline.batches(source, 23, augment=pipeline.random_flip,
                            seed=1))["image"]
  b = next(pipeline.batches(source, 23, augment=pipeline.random_flip,
                            seed=1))["image"]
  np.testing.assert_array_equal(a, b)


def test_flip_flips_some_but_not_all(source):
  out = next(pipeline.batches(source, 23, augment=pipeline.random_flip,
                              shuffle=False))["image"]
  ref = source.images / 127.5 - 1.0
  flipped = [np.allclose(o, r[:, ::-1]) and not np.allclose(o, r)
             for o, r in zip(out, ref, strict=True)]
  assert 0 < sum(flipped) < 23


def test_class_indices_group_by_label(source):
  groups = pipeline.class_indices(source)
  assert [len(g) for g in groups] == [8, 8, 7]
  for label, g in enumerate(groups):
    assert np.all(source.labels[g] == label)


def test_indices_restrict_to_one_class(source):
  groups = pipeline.class_indices(source)
  labels = np.concatenate([b["label"] for b in pipeline.batches(
      source, 4, indices=groups[2])])
  assert sorted(labels.tolist()) == [2] * 7


def test_bad_batch_size(source):
  with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
    pipeline.batches(source, 0)


def test_fractional_batch_size(source):
  with pytest.raises(ValueError, match="batch_size must be an integer"):
    pipeline.batches(source, 2.5)


def test_negative_seed(source):
  with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
    pipeline.batches(source, 2, seed=-1)


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
