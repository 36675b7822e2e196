import os
import threading

import jax
import numpy as np
import pytest

import pqd_jax
from pqd_jax import distributed
from pqd_jax.autoencoder import latents
from pqd_jax.quantization import class_files

_SIZES = (30, 17, 24)


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
  """A latents artefact of three classes of uneven sizes, [n, 2, 2, 2]."""
  gen = np.random.default_rng(0)
  labels = np.repeat(np.arange(len(_SIZES)), _SIZES)
  z = gen.normal(labels[:, None, None, None], 1.0, (len(labels), 2, 2, 2))
  path = str(tmp_path_factory.mktemp("latents"))
  latents.save(path, z.astype(np.float32), labels, ["a", "b", "c"],
               dtype="float32")
  return path


_KW = dict(num_passes=2, batch_size=16, rng=jax.random.key(5))


def _assert_same(result, expected):
  for field in pqd_jax.QuantizeResult._fields:
    np.testing.assert_array_equal(np.asarray(getattr(result, field)),
                                  np.asarray(getattr(expected, field)),
                                  err_msg=field)


def test_one_group_is_quantize_stream_on_the_files(directory, tmp_path):
  out = class_files.quantize_class_files(directory, 3,
                                         scratch=str(tmp_path), **_KW)
  ref = pqd_jax.quantize_stream(latents.stream(directory), 3,
                                seed_classes=class_files.CLASS_GROUP, **_KW)
  _assert_same(out, ref)
  assert np.asarray(out.counts).sum(1).tolist() == list(_SIZES)


def test_groups_are_concatenated_in_class_order(directory, tmp_path):
  out = class_files.quantize_class_files(directory, 3, class_group=2,
                                         scratch=str(tmp_path), **_KW)
  first, second = (
      pqd_jax.quantize_stream(latents.stream(directory, classes=group), 3,
                              seed_classes=2, **_KW)
      for group in ([0, 1], [2]))
  np.testing.assert_array_equal(out.classes, [0, 1, 2])
  for field in pqd_jax.QuantizeResult._fields:
    np.testing.assert_array_equal(
        getattr(out, field),
        np.concatenate([np.asarray(getattr(first, field)),
                        np.asarray(getattr(second, field))]),
        err_msg=field)


def test_processes_exchange_their_groups_through_scratch(tmp_path,
                                                         monkeypatch):
  # Two "processes" as threads: process 0 holds groups 0 and 2, process 1
  # group 1; each must end with all three, and the scratch files removed.
  wait = threading.Barrier(2)
  monkeypatch.setattr(distributed, "barrier", lambda name: wait.wait())
  group = lambda g: {"classes": np.array([g]), "counts": np.full((1, 2), g)}
  held = [{0: group(0), 2: group(2)}, {1: group(1)}]
  results = [None, None]

  def process(i):
    results[i] = class_files.share_groups(held[i], 3, str(tmp_path), k=2)

  threads = [threading.Thread(target=process, args=(i,)) for i in (0, 1)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=60)
  for result in results:
    assert sorted(result) == [0, 1, 2]
    for g in range(3):
      for field, value in group(g).items():
        np.testing.assert_array_equal(result[g][field], value)
  assert os.listdir(tmp_path) == []


def test_class_group_must_be_a_positive_integer(directory, tmp_path):
  with pytest.raises(ValueError, match="class_group must be >= 1"):
    class_files.quantize_class_files(directory, 3, class_group=0,
                                     scratch=str(tmp_path))
