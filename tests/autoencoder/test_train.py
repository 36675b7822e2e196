import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from pqd_jax.autoencoder import model as model_lib
from pqd_jax.autoencoder import train as train_lib
from pqd_jax.data import pipeline
from tests.autoencoder.conftest import tiny_config, tiny_images

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _params_equal(a, b):
  leaves = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  return all(np.array_equal(x, y) for x, y in leaves)


def test_training_improves_reconstruction(tiny_source, tmp_path):
  images = pipeline.to_unit_range(tiny_source.read())
  init = model_lib.init_autoencoder(tiny_config(), jax.random.key(0))
  before = train_lib.psnr(images, train_lib.reconstruct(init, images))
  ae = train_lib.train_autoencoder(tiny_config(num_steps=40), tiny_source,
                                   str(tmp_path), progress=False)
  after = train_lib.psnr(images, train_lib.reconstruct(ae, images))
  assert after > before + 3.0


def test_scaling_factor_gives_unit_std_latents(tiny_source, tmp_path):
  ae = train_lib.train_autoencoder(tiny_config(num_steps=4), tiny_source,
                                   str(tmp_path), progress=False)
  z = model_lib.encode(ae, pipeline.to_unit_range(tiny_source.read()))
  assert float(z.std()) == pytest.approx(1.0, rel=1e-3)


def test_final_model_is_written_and_loads(tiny_source, tmp_path):
  ae = train_lib.train_autoencoder(tiny_config(num_steps=2), tiny_source,
                                   str(tmp_path), progress=False)
  loaded = model_lib.load_pretrained(str(tmp_path / "final"))
  assert loaded.scaling_factor == pytest.approx(ae.scaling_factor)
  assert _params_equal(loaded.params, ae.params)


def test_metrics_are_logged(tiny_source, tmp_path):
  images = pipeline.to_unit_range(tiny_source.read())
  train_lib.train_autoencoder(tiny_config(num_steps=4), tiny_source,
                              str(tmp_path), test_images=images,
                              eval_every=2, progress=False)
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 3  # steps 2 and 4, then the final row


_KILLED_RUN = textwrap.dedent("""
    import sys
    from pqd_jax.autoencoder import train as train_lib
    from pqd_jax.data import sources
    from tests.autoencoder.conftest import tiny_config, tiny_images
    images, labels = tiny_images()
    src = sources.ArraySource(images, labels, ("a", "b"))
    train_lib.train_autoencoder(tiny_config(num_steps=150), src, sys.argv[1],
                                checkpoint_every=2, progress=False)
""")


def test_killed_training_resumes_to_the_same_parameters(tmp_path):
  """SIGKILL mid-run, resume: same parameters as an uninterrupted run."""
  killed = str(tmp_path / "killed")
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, killed],
                          env=env, cwd=ROOT)
  deadline = time.time() + 300
  ckpt = os.path.join(killed, "ckpt")
  while time.time() < deadline:
    done = [d for d in (os.listdir(ckpt) if os.path.isdir(ckpt) else [])
            if d.isdigit()]
    if len(done) >= 2:
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, "run ended before the kill"
  images, labels = tiny_images()
  from pqd_jax.data import sources
  src = sources.ArraySource(images, labels, ("a", "b"))
  config = tiny_config(num_steps=150)
  resumed = train_lib.train_autoencoder(config, src, killed, progress=False,
                                        checkpoint_every=150)
  straight = train_lib.train_autoencoder(config, src, str(tmp_path / "one"),
                                         progress=False, checkpoint_every=150)
  assert _params_equal(resumed.params, straight.params)


def test_resuming_with_another_architecture_is_refused(tiny_source, tmp_path):
  train_lib.train_autoencoder(tiny_config(num_steps=1), tiny_source,
                              str(tmp_path), progress=False)
  with pytest.raises(ValueError, match="different config.*latent_channels"):
    train_lib.train_autoencoder(tiny_config(latent_channels=3), tiny_source,
                                str(tmp_path), progress=False)


def test_images_of_the_wrong_size_are_refused(tmp_path):
  from pqd_jax.data import sources
  images, labels = tiny_images()
  src = sources.ArraySource(np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0))),
                            labels, ("a", "b"))
  with pytest.raises(ValueError, match=r"shape \(10, 10, 1\).*\(8, 8, 1\)"):
    train_lib.train_autoencoder(tiny_config(), src, str(tmp_path),
                                progress=False)


def test_a_finished_model_is_loaded_without_its_checkpoints(tiny_source,
                                                            tmp_path):
  first = train_lib.train_autoencoder(tiny_config(), tiny_source,
                                      str(tmp_path), progress=False)
  shutil.rmtree(tmp_path / "ckpt")
  again = train_lib.train_autoencoder(tiny_config(), tiny_source,
                                      str(tmp_path), progress=False)
  assert not (tmp_path / "ckpt").exists()
  assert again.scaling_factor == first.scaling_factor
  for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(again.params),
                  strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
