"""quantize on 4 fake CPU devices: same result as 1 device, deterministic.

XLA_FLAGS must be set before JAX starts, so the check runs in a subprocess.
"""

import json
import textwrap

import numpy as np
import pytest

from tests.conftest import run_on_fake_devices

_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    import pqd_jax
    from pqd_jax import sharding
    from tests.conftest import labelled_blobs

    assert jax.device_count() == 4, jax.devices()
    x, y = labelled_blobs((301, 203, 250), dim=5)
    method, init = sys.argv[1], sys.argv[2]
    kw = dict(method=method, init=init, rng=jax.random.key(11),
              batch_size=64)
    out = {}
    for name, devices in (("one", jax.devices()[:1]), ("four", jax.devices())):
      mesh = sharding.data_mesh(devices)
      r = pqd_jax.quantize(x, y, 6, mesh=mesh, **kw)
      out[name] = {f: np.asarray(getattr(r, f)).tolist()
                   for f in ("centroids", "counts", "distortion")}
    again = pqd_jax.quantize(x, y, 6, **kw)  # default mesh: all 4 devices
    out["four_again"] = {f: np.asarray(getattr(again, f)).tolist()
                         for f in ("centroids", "counts", "distortion")}
    out["n_points"] = [int(np.sum(y == c)) for c in np.unique(y)]
    print(json.dumps(out))
""")


def _run(method, init="kmeans++"):
  return json.loads(run_on_fake_devices(_SCRIPT, method, init).strip()
                    .splitlines()[-1])


@pytest.fixture(scope="module")
def lloyd_runs():
  return _run("lloyd")


def test_four_devices_match_one_device(lloyd_runs):
  one, four = lloyd_runs["one"], lloyd_runs["four"]
  np.testing.assert_array_equal(one["counts"], four["counts"])
  np.testing.assert_allclose(one["centroids"], four["centroids"], rtol=1e-4,
                             atol=1e-4)
  np.testing.assert_allclose(one["distortion"], four["distortion"],
                             rtol=1e-5)


def test_four_devices_are_bitwise_deterministic(lloyd_runs):
  four, again = lloyd_runs["four"], lloyd_runs["four_again"]
  assert four == again


def test_sharded_counts_cover_every_point(lloyd_runs):
  np.testing.assert_array_equal(np.sum(lloyd_runs["four"]["counts"], 1),
                                lloyd_runs["n_points"])


def test_sharded_clvq_is_deterministic_and_counts_every_point():
  runs = _run("clvq")
  assert runs["four"] == runs["four_again"]
  np.testing.assert_array_equal(np.sum(runs["four"]["counts"], 1),
                                runs["n_points"])


def test_d4m_on_four_devices_matches_one_device():
  # Each batch of k rows is gathered from the devices that hold it.
  runs = _run("d4m")
  one, four = runs["one"], runs["four"]
  np.testing.assert_array_equal(one["counts"], four["counts"])
  np.testing.assert_allclose(one["centroids"], four["centroids"], rtol=1e-4,
                             atol=1e-4)


def test_kmeans_parallel_seeds_on_four_devices_match_one_device():
  runs = _run("lloyd", "kmeans||")
  one, four = runs["one"], runs["four"]
  np.testing.assert_array_equal(one["counts"], four["counts"])
  np.testing.assert_allclose(one["centroids"], four["centroids"], rtol=1e-4,
                             atol=1e-4)
  assert four == runs["four_again"]
