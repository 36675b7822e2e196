import jax
import numpy as np
import pytest

from pqd_jax import sharding
from tests.conftest import run_on_fake_devices


def test_padding_rows_have_weight_zero():
  batch = {"image": np.arange(10.0).reshape(5, 2), "weight": np.ones(5),
           "label": np.arange(5)}
  out = sharding.pad_to_shards(batch, 4)
  assert out["image"].shape == (8, 2)
  np.testing.assert_array_equal(out["weight"], [1, 1, 1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(out["label"][5:], [4, 4, 4])


def _lazy(array, calls):
  def read(start, stop):
    calls.append((start, stop))
    return array[start:stop]
  return sharding.LazyRows(read, array.shape, array.dtype)


def test_lazy_rows_are_read_only_when_indexed():
  calls = []
  rows = _lazy(np.arange(12.0).reshape(6, 2), calls)
  assert calls == []
  np.testing.assert_array_equal(rows[2:4, 1], [5.0, 7.0])
  assert calls == [(2, 4)]


def test_lazy_rows_are_padded_like_an_array():
  calls = []
  image = np.arange(10.0).reshape(5, 2)
  batch = {"image": _lazy(image, calls), "weight": np.ones(5),
           "label": np.arange(5)}
  lazy = sharding.pad_to_shards(batch, 4)
  eager = sharding.pad_to_shards(dict(batch, image=image), 4)
  assert calls == []
  np.testing.assert_array_equal(lazy["image"][:], eager["image"])
  np.testing.assert_array_equal(lazy["image"][6:8], eager["image"][6:8])
  np.testing.assert_array_equal(lazy["weight"], eager["weight"])


def test_a_sharded_lazy_batch_equals_the_array():
  image = np.arange(24.0).reshape(6, 4)
  mesh = sharding.data_mesh()
  out = sharding.shard_batch({"image": _lazy(image, []),
                              "weight": np.ones(6)}, mesh)
  np.testing.assert_array_equal(np.asarray(out["image"])[:6], image)


def test_a_batch_that_splits_evenly_is_untouched():
  batch = {"image": np.zeros((8, 2))}
  assert sharding.pad_to_shards(batch, 4) is batch


def test_an_uneven_batch_without_weights_is_refused():
  with pytest.raises(ValueError, match="5 rows cannot be split over 4"):
    sharding.pad_to_shards({"image": np.zeros((5, 2))}, 4)


def test_replicate_keeps_prng_keys_usable():
  mesh = sharding.data_mesh()
  key = sharding.replicate(jax.random.key(3), mesh)
  np.testing.assert_array_equal(
      np.asarray(jax.random.normal(key, (3,))),
      np.asarray(jax.random.normal(jax.random.key(3), (3,))))


_ROWS_READ = """
import jax, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from pqd_jax import sharding

class Recorder:
  def __init__(self, a):
    self.a, self.shape, self.dtype, self.reads = a, a.shape, a.dtype, []
  def __getitem__(self, index):
    self.reads.append(index[0].indices(self.shape[0])[:2])
    return self.a[index]

host = Recorder(np.arange(24.0).reshape(8, 3))
mesh = sharding.data_mesh()
arr = sharding.global_array(host, NamedSharding(mesh, P("data")))
np.testing.assert_array_equal(sharding.to_host(arr), host.a)
assert sorted(host.reads) == [(0, 2), (2, 4), (4, 6), (6, 8)], host.reads
batch = sharding.shard_batch({"image": np.ones((6, 2)),
                              "weight": np.ones(6)}, mesh)
assert batch["image"].shape == (8, 2)
print("ok")
"""


def test_global_array_reads_each_device_rows_once():
  assert run_on_fake_devices(_ROWS_READ).strip().endswith("ok")


def test_lazy_rows_take_gathers_rows_in_any_order():
  array = np.arange(12.0).reshape(6, 2)
  rows = _lazy(array, [])
  np.testing.assert_array_equal(rows.take([4, 0, 4]), array[[4, 0, 4]])
  assert rows.take([]).shape == (0, 2)


def test_lazy_rows_take_reads_each_run_of_rows_once():
  array = np.arange(20.0).reshape(10, 2)
  reads = []
  rows = _lazy(array, reads)
  np.testing.assert_array_equal(rows.take([7, 2, 3, 8, 2, -1]),
                                array[[7, 2, 3, 8, 2, -1]])
  assert sorted(reads) == [(2, 4), (7, 10)]


def test_lazy_rows_take_rejects_an_index_past_the_end():
  with pytest.raises(IndexError, match=r"\[-6, 6\).*\[0, 6\]"):
    _lazy(np.zeros((6, 2)), []).take([0, 6])


@pytest.mark.parametrize("shape,dtype", [((3, 5, 7), np.float32),
                                         ((1, 0, 4), np.float16),
                                         ((9,), np.int8)])
def test_host_zeros_are_zeros_on_a_64_byte_boundary(shape, dtype):
  out = sharding.host_zeros(shape, dtype)
  assert out.shape == shape and out.dtype == dtype and not out.any()
  assert out.ctypes.data % 64 == 0 and out.flags.c_contiguous


@pytest.mark.parametrize("shape,dtype", [((3, 5, 7), np.float32),
                                         ((1, 0, 4), np.float16),
                                         ((9,), np.int8)])
def test_host_empty_is_on_a_64_byte_boundary(shape, dtype):
  out = sharding.host_empty(shape, dtype)
  assert out.shape == shape and out.dtype == dtype
  assert out.ctypes.data % 64 == 0 and out.flags.c_contiguous


def test_accepted_compiler_options_drop_an_unknown_option():
  options = {"xla_no_such_option_for_the_test": True,
             "xla_backend_optimization_level": 2}
  assert sharding.accepted_compiler_options(options, "cpu") == {
      "xla_backend_optimization_level": 2}


def test_a_frozen_host_array_and_its_views_are_frozen():
  a = sharding.freeze(sharding.host_empty((8, 4), np.float32))
  assert sharding.frozen(a) and sharding.frozen(a[2:6])


def test_a_read_only_view_of_a_writeable_buffer_is_not_frozen():
  buffer = sharding.host_empty((8, 4), np.float32)
  view = buffer[2:6]
  view.flags.writeable = False
  assert not sharding.frozen(view)


def test_a_memory_map_is_not_frozen(tmp_path):
  np.save(tmp_path / "a.npy", np.zeros((8, 4), np.float32))
  assert not sharding.frozen(np.load(tmp_path / "a.npy", mmap_mode="r"))
