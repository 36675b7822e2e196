import json

import numpy as np
import pytest

import pqd_jax
from pqd_jax import sharding
from pqd_jax.quantization import metrics
from tests.conftest import labelled_blobs, run_on_fake_devices


@pytest.fixture(scope="module")
def data():
  return labelled_blobs((300, 200, 250), dim=4)


def _stream(x, y, batch):
  return lambda: ((x[s:s + batch], y[s:s + batch])
                  for s in range(0, len(y), batch))


@pytest.fixture(scope="module")
def streamed(data):
  x, y = data
  return pqd_jax.quantize_stream(_stream(x, y, 97), 5, num_passes=3,
                                 batch_size=64, n_init=3)


def test_counts_sum_to_class_sizes(data, streamed):
  x, y = data
  np.testing.assert_array_equal(np.asarray(streamed.counts).sum(1),
                                [300, 200, 250])


def test_counts_are_exact_recounts(data, streamed):
  x, y = data
  for i, label in enumerate(streamed.classes):
    ref = metrics.cell_counts(x[y == label], streamed.centroids[i])
    np.testing.assert_array_equal(np.asarray(streamed.counts[i]), ref)


def test_distortion_is_exact_for_the_centroids(data, streamed):
  x, y = data
  for i, label in enumerate(streamed.classes):
    ref = metrics.distortion(x[y == label], streamed.centroids[i])
    np.testing.assert_allclose(float(streamed.distortion[i]), ref, rtol=1e-5)


def test_quality_is_close_to_lloyd(data, streamed):
  x, y = data
  lloyd = pqd_jax.quantize(x, y, 5, n_init=3)
  assert np.all(np.asarray(streamed.distortion)
                <= 1.1 * np.asarray(lloyd.distortion))


def test_batch_size_does_not_drop_points(data):
  x, y = data
  out = pqd_jax.quantize_stream(_stream(x, y, 1000), 4, batch_size=7)
  np.testing.assert_array_equal(np.asarray(out.counts).sum(1),
                                [300, 200, 250])


def test_deterministic_for_a_seed(data):
  x, y = data
  a = pqd_jax.quantize_stream(_stream(x, y, 128), 4)
  b = pqd_jax.quantize_stream(_stream(x, y, 128), 4)
  np.testing.assert_array_equal(np.asarray(a.centroids),
                                np.asarray(b.centroids))


class TestBadInput:

  def test_iterator_instead_of_callable(self, data):
    x, y = data
    with pytest.raises(ValueError, match="must be a callable"):
      pqd_jax.quantize_stream(iter([(x, y)]), 3)

  def test_empty_stream(self):
    with pytest.raises(ValueError, match="stream is empty"):
      pqd_jax.quantize_stream(lambda: iter([]), 3)

  def test_k_larger_than_a_class(self, data):
    x, y = data
    with pytest.raises(ValueError, match=r"k=201 .*\[10\]"):
      pqd_jax.quantize_stream(_stream(x, y, 100), 201)

  def test_inconsistent_latent_shapes(self, data):
    x, y = data
    batches = lambda: iter([(x[:10], y[:10]), (x[10:20, :3], y[10:20])])
    with pytest.raises(ValueError, match="first batch"):
      pqd_jax.quantize_stream(batches, 2)

  def test_same_size_but_another_latent_shape(self, data):
    x, y = data
    a = x[:10, :4].reshape(10, 4, 1)
    b = x[10:20, :4].reshape(10, 1, 4)
    batches = lambda: iter([(a, y[:10]), (b, y[10:20])])
    with pytest.raises(ValueError, match=r"\(1, 4\) but the first batch had "
                       r"\(4, 1\)"):
      pqd_jax.quantize_stream(batches, 2)

  def test_rng_that_is_not_a_key(self, data):
    x, y = data
    with pytest.raises(ValueError, match="rng must be a JAX PRNG key"):
      pqd_jax.quantize_stream(_stream(x, y, 100), 2, rng=3)

  def test_nan_in_a_batch(self, data):
    x, y = data
    bad = x[:50].copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
      pqd_jax.quantize_stream(lambda: iter([(bad, y[:50])]), 2)


def test_values_beyond_float32_are_refused(data):
  x, y = data
  wide = x.astype(np.float64)
  wide[0, 1] = 1e39  # the first point of its class
  with pytest.raises(ValueError, match=r"beyond float32's range.*\[0\]"):
    pqd_jax.quantize_stream(lambda: iter([(wide, y)]), 2)


def _assert_same_result(a, b):
  for field in ("centroids", "counts", "distortion"):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def _aligned_chunks(x, y, rows, frozen):
  """Chunks in new 64-byte-aligned arrays, frozen or not."""
  def make():
    for s in range(0, len(y), rows):
      chunk = sharding.host_empty(x[s:s + rows].shape, x.dtype)
      chunk[...] = x[s:s + rows]
      yield sharding.freeze(chunk) if frozen else chunk, y[s:s + rows]
  return make


def test_frozen_chunks_used_in_place_give_the_copied_result(data):
  x, y = data
  # Chunks of 80 rows, batches of 32: most batches lie in one chunk, the
  # others straddle two.
  results = [pqd_jax.quantize_stream(_aligned_chunks(x, y, 80, frozen),
                                     5, batch_size=32, num_passes=2)
             for frozen in (True, False)]
  _assert_same_result(*results)


@pytest.mark.parametrize("read_only_view", [False, True])
def test_a_reader_may_reuse_its_chunk_buffer(data, read_only_view):
  x, y = data

  def reused():
    chunk = sharding.host_empty((96, x.shape[1]), x.dtype)
    for s in range(0, len(y), 96):
      n = len(y[s:s + 96])
      chunk[:n] = x[s:s + 96]
      view = chunk[:n]
      view.flags.writeable = not read_only_view  # the buffer stays writeable
      yield view, y[s:s + 96]

  results = [pqd_jax.quantize_stream(make, 5, batch_size=32, num_passes=2)
             for make in (reused, _aligned_chunks(x, y, 96, False))]
  _assert_same_result(*results)


def test_a_spread_beyond_float32_is_named_as_such(data):
  x, y = data
  wide = x.copy()
  wide[5, 2] = 3e19  # finite, not its class's first point
  with pytest.raises(ValueError, match=r"class\(es\) \[20\] spread up to"):
    pqd_jax.quantize_stream(lambda: iter([(wide, y)]), 2)


def test_nan_on_a_later_pass_is_refused(data):
  x, y = data
  calls = []

  def batches():
    calls.append(1)
    bad = x.copy()
    if len(calls) > 1:
      bad[10, 1] = np.nan
    return iter([(bad, y)])

  with pytest.raises(ValueError, match="NaN or Inf on a later pass"):
    pqd_jax.quantize_stream(batches, 2)


def test_streaming_equals_one_in_memory_array(data):
  # The reader's chunking does not matter: chunks of 7 rows and the whole
  # array as one chunk give the same centroids (fixed batches of 64).
  x, y = data
  chunked = pqd_jax.quantize_stream(_stream(x, y, 7), 4, num_passes=2,
                                    batch_size=64)
  whole = pqd_jax.quantize_stream(lambda: iter([(x, y)]), 4, num_passes=2,
                                  batch_size=64)
  np.testing.assert_array_equal(np.asarray(chunked.centroids),
                                np.asarray(whole.centroids))
  np.testing.assert_array_equal(np.asarray(chunked.counts),
                                np.asarray(whole.counts))


@pytest.mark.parametrize("seed_classes", [1, 2])
def test_seeding_in_class_groups_gives_the_same_seeds(data, seed_classes):
  # Groups of 2 of the 3 classes: the second is filled up with the first.
  x, y = data
  one = pqd_jax.quantize_stream(_stream(x, y, 97), 4,
                                seed_classes=seed_classes)
  all_ = pqd_jax.quantize_stream(_stream(x, y, 97), 4, seed_classes=64)
  np.testing.assert_allclose(np.asarray(one.centroids),
                             np.asarray(all_.centroids), rtol=1e-5,
                             atol=1e-5)


def test_float16_stream_matches_its_float32_copy(data):
  x, y = data
  half = x.astype(np.float16)
  a = pqd_jax.quantize_stream(_stream(half, y, 50), 4)
  b = pqd_jax.quantize_stream(_stream(half.astype(np.float32), y, 50), 4)
  np.testing.assert_allclose(np.asarray(a.centroids), np.asarray(b.centroids),
                             rtol=1e-5, atol=1e-5)


_FOUR_DEVICES = """
import json
import jax, numpy as np
import pqd_jax
from pqd_jax import sharding
from tests.conftest import labelled_blobs
assert jax.device_count() == 4, jax.devices()
x, y = labelled_blobs((301, 203, 250), dim=5)
x = x.astype(np.float16)
stream = lambda: ((x[s:s + 97], y[s:s + 97]) for s in range(0, len(y), 97))
out = {}
for name, devices in (("one", jax.devices()[:1]), ("four", jax.devices())):
  r = pqd_jax.quantize_stream(stream, 4, num_passes=2, batch_size=64,
                              mesh=sharding.data_mesh(devices),
                              rng=jax.random.key(3))
  out[name] = {f: np.asarray(getattr(r, f)).tolist()
               for f in ("centroids", "counts", "distortion")}
print(json.dumps(out))
"""


def test_four_devices_match_one_device():
  runs = json.loads(run_on_fake_devices(_FOUR_DEVICES).strip()
                    .splitlines()[-1])
  one, four = runs["one"], runs["four"]
  np.testing.assert_array_equal(one["counts"], four["counts"])
  np.testing.assert_allclose(one["centroids"], four["centroids"], rtol=1e-4,
                             atol=1e-4)
  np.testing.assert_allclose(one["distortion"], four["distortion"],
                             rtol=1e-5)


_BOUNDED = """
import resource, sys
import numpy as np
import pqd_jax
n_per_class = int(sys.argv[1])
def batches():
  # 8 classes of n_per_class float16 points, D = 512, generated chunk by
  # chunk: nothing but the quantizer holds data.
  for c in range(8):
    for s in range(0, n_per_class, 500):
      gen = np.random.default_rng([c, s])
      part = gen.normal(c, 1.0, (min(500, n_per_class - s), 512))
      yield part.astype(np.float16), np.full(len(part), c)
out = pqd_jax.quantize_stream(batches, 4, batch_size=256)
assert np.asarray(out.counts).sum(1).tolist() == [n_per_class] * 8
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def test_memory_does_not_grow_with_the_stream():
  # 16x more data (2 -> 33 MB of float16 points, 4 -> 67 MB as float32)
  # must not raise the peak RSS by more than a few MB.
  small, large = (int(run_on_fake_devices(_BOUNDED, str(n), devices=1))
                  for n in (500, 8000))
  assert large - small < 20, (small, large)


def _class_major(data):
  x, y = data
  order = np.argsort(y, kind="stable")
  return x[order], y[order]


def _counted(x, y, chunk):
  calls = []

  def batches():
    calls.append(1)
    return _stream(x, y, chunk)()

  return batches, calls


def test_class_major_stream_needs_no_recount_pass(data):
  # Batches of 64 rows: every class spans at most 5 batches.
  x, y = _class_major(data)
  batches, calls = _counted(x, y, 97)
  pqd_jax.quantize_stream(batches, 4, num_passes=2, batch_size=64,
                          held_batches=4)
  assert len(calls) == 1 + 2


def test_a_class_spanning_more_batches_is_recounted_by_a_pass(data):
  x, y = _class_major(data)
  batches, calls = _counted(x, y, 97)
  pqd_jax.quantize_stream(batches, 4, num_passes=2, batch_size=64,
                          held_batches=3)
  assert len(calls) == 1 + 2 + 1


@pytest.mark.parametrize("held_batches", [1, 3])
@pytest.mark.parametrize("descending", [False, True])
def test_held_recount_equals_a_recount_pass(data, held_batches, descending):
  # Descending with one held batch: the first class is recounted in part,
  # then dropped with the second, and recounted again by the pass.
  x, y = _class_major(data)
  if descending:
    x, y = x[::-1], y[::-1]
  run = lambda held: pqd_jax.quantize_stream(
      _stream(x, y, 97), 4, num_passes=2, batch_size=128, held_batches=held)
  held, passed = run(held_batches), run(0)
  np.testing.assert_array_equal(np.asarray(held.counts),
                                np.asarray(passed.counts))
  np.testing.assert_array_equal(np.asarray(held.distortion),
                                np.asarray(passed.distortion))


def test_lost_and_held_classes_in_one_stream_equal_a_recount_pass():
  # Batches of 64 rows, three held: class 0 spans five batches and is left
  # to the recount pass; classes 1 and 2 (one and four batches) are
  # recounted while held.
  x, y = _class_major(labelled_blobs((320, 64, 256), dim=4))
  batches, calls = _counted(x, y, 64)
  run = lambda held: pqd_jax.quantize_stream(
      batches, 4, num_passes=2, batch_size=64, held_batches=held)
  held = run(3)
  assert len(calls) == 1 + 2 + 1
  passed = run(0)
  np.testing.assert_array_equal(np.asarray(held.counts),
                                np.asarray(passed.counts))
  np.testing.assert_array_equal(np.asarray(held.distortion),
                                np.asarray(passed.distortion))


def test_held_recount_is_exact_for_the_centroids(data):
  x, y = _class_major(data)
  out = pqd_jax.quantize_stream(_stream(x, y, 97), 4, batch_size=64)
  for i, label in enumerate(out.classes):
    np.testing.assert_array_equal(
        np.asarray(out.counts[i]),
        metrics.cell_counts(x[y == label], out.centroids[i]))
    np.testing.assert_allclose(
        float(out.distortion[i]),
        metrics.distortion(x[y == label], out.centroids[i]), rtol=1e-5)


@pytest.mark.parametrize("extra", [slice(0, 5), slice(0, 0)])
def test_data_changed_on_the_last_pass_is_refused(data, extra):
  # More rows of a class, or one row fewer, after the first pass.
  x, y = _class_major(data)
  calls = []

  def batches():
    calls.append(1)
    if len(calls) == 1:
      return iter([(x, y)])
    changed = slice(None) if extra.stop else slice(1, None)
    return iter([(np.concatenate([x[changed], x[extra]]),
                  np.concatenate([y[changed], y[extra]]))])

  with pytest.raises(ValueError, match="different data on a later pass"):
    pqd_jax.quantize_stream(batches, 2, batch_size=64)


def test_negative_held_batches_is_refused(data):
  x, y = data
  with pytest.raises(ValueError, match="held_batches must be >= 0"):
    pqd_jax.quantize_stream(_stream(x, y, 100), 2, held_batches=-1)
