"""Quantize: per-class centroids, cell-mass weights, and distortion vs K."""

import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from pqd_jax import report, workdir
from pqd_jax.autoencoder import latents as latents_lib
from pqd_jax.quantization import api as quantize_api
from pqd_jax.quantization import class_files

__all__ = ["QUANTIZATION", "SWEEP", "quantization", "quantizer", "sweep"]

QUANTIZATION = workdir.Stage(
    "quantization", "quantize", reads=("quantize", "ipc", "factor", "seed"),
    outputs=("quantization.npz",))
SWEEP = workdir.Stage(
    "quantization_sweep", "quantize", reads=("quantize", "report", "seed"),
    outputs=("sweep.npz",))


def quantizer(directory: str, c: Any, seed: int,
              scratch: str) -> Callable[[int], quantize_api.QuantizeResult]:
  """``k -> QuantizeResult``: a ``quantize`` config on a latents artefact.

  ``method="stream"`` reads the class files in chunks on every call
  (:func:`pqd_jax.quantization.class_files.quantize_class_files`,
  ``num_iters`` CLVQ passes, memory independent of the dataset size; in a
  multi-process run each process streams its class groups and shares its
  results through ``scratch``). ``"lloyd"`` and ``"clvq"`` hold the points
  on the devices (:func:`pqd_jax.quantize`), each process reading from the
  memory-mapped class files only the rows of its own devices.

  Args:
    directory: a ``latents`` artefact.
    c: a ``quantize`` config section.
    seed: the run's seed.
    scratch: a directory on the shared workdir (stream, multi-process).
  """
  if c.method == "stream":
    return lambda k: class_files.quantize_class_files(
        directory, k, weights=c.weights, init=c.init, n_init=c.n_init,
        num_passes=c.num_iters, tol=c.tol, batch_size=c.batch_size,
        rng=jax.random.key(seed), scratch=scratch)
  z, y = latents_lib.load(directory, lazy=True, dtype="float32")
  return lambda k: quantize_api.quantize(
      z, y, k, method=c.method, weights=c.weights, init=c.init,
      n_init=c.n_init, num_iters=c.num_iters, tol=c.tol,
      batch_size=c.batch_size, rng=jax.random.key(seed))


def quantization(wd: workdir.Workdir, config,
                 lat_art: workdir.Artefact) -> workdir.Artefact:
  """``quantization.npz``: centroids ``[C, K, …]``, weights, counts, etc.

  ``K = ipc · factor²``: parameterised storage keeps ``factor²`` decoded
  centroids in each of the ``ipc`` stored images.
  """

  def make(path, c):
    out = quantizer(lat_art.path, c.quantize, c.seed,
                    wd.path(".scratch", "stream"))(c.ipc * c.factor ** 2)
    workdir.write_npz(
        os.path.join(path, "quantization.npz"),
        centroids=np.asarray(out.centroids), weights=np.asarray(out.weights),
        counts=np.asarray(out.counts), distortion=np.asarray(out.distortion),
        classes=np.asarray(out.classes))

  return wd.run(QUANTIZATION, config, make, upstream=(lat_art,))


def sweep(wd: workdir.Workdir, config,
          lat_art: workdir.Artefact) -> workdir.Artefact:
  """Distortion for each K of ``report.sweep_ks`` with the same quantizer.

  ``sweep.npz`` (``ks``, ``distortion`` ``[len(ks), C]``, ``dim``) and, for
  two Ks or more, ``distortion_vs_k.png``. Ks above the smallest class are
  left out.
  """

  def make(path, c):
    index = latents_lib.read_index(lat_art.path)
    smallest = min(index["counts"])
    ks = sorted({int(k) for k in c.report.sweep_ks if 1 <= int(k) <= smallest})
    quantize_k = quantizer(lat_art.path, c.quantize, c.seed,
                           wd.path(".scratch", "stream"))
    rows = [np.asarray(quantize_k(k).distortion, np.float64) for k in ks]
    dim = int(np.prod(index["latent_shape"]))
    distortion = np.asarray(rows).reshape(len(ks), -1)
    workdir.write_npz(os.path.join(path, "sweep.npz"),
                      ks=np.asarray(ks, np.int32), distortion=distortion,
                      dim=dim)
    if len(ks) >= 2:
      report.plot_sweep(np.asarray(ks), distortion, dim,
                        os.path.join(path, "distortion_vs_k.png"))

  return wd.run(SWEEP, config, make, upstream=(lat_art,))
