"""The distillation pipeline: stages with cached, resumable artefacts.

encode → quantize → decode → relabel → train → eval, each stage writing its
artefacts under the workdir (``../shared/DESIGN.md``, Artefacts):

==========  ==================================================================
stage       artefacts
==========  ==================================================================
encode      ``autoencoder/`` (trained here or loaded), ``latents/``
quantize    ``quantization.npz`` (centroids ``[C, K, …]``, weights ``[C, K]``,
            counts, distortion, classes); ``quantization_sweep/``
            (distortion for each K of ``report.sweep_ks``, its plot)
decode      ``prior/`` (trained here or loaded), ``synthetic/`` (``images.npz``
            with images, labels, weights and class names; ``folder/<class>/
            *.png`` with ``weights.csv``; ``grid.png``)
relabel     ``teacher/`` (trained here, or loaded from a checkpoint)
train       ``student/seed<s>/`` (online KD on the weighted synthetic set)
eval        ``results.json``, ``report.md`` (student ``metrics.jsonl`` logs
            are in ``teacher/`` and ``student/seed<s>/``)
==========  ==================================================================

Every artefact records the hash of the config fields it depends on (its own
section and its inputs' hashes) in a ``stage.json`` written last. A stage
whose artefact carries the current hash is skipped; a stage whose config
changed is recomputed after moving the old artefact aside to
``<name>.<old hash>`` (nothing in the workdir is deleted); a student's hash
leaves out ``student.num_seeds``, so more seeds train only the new students.
Training stages resume from their orbax checkpoints, so a killed run started
again with the same command finishes the job.
"""

import collections
import csv
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from PIL import Image

from pqd_jax import (
  checks,
  distributed,
  embedded,
  io,
  models,
  sharding,
  visualize,
)
from pqd_jax.autoencoder import latents as latents_lib
from pqd_jax.autoencoder import model as ae_lib
from pqd_jax.autoencoder import train as ae_train
from pqd_jax.data import class_names as class_names_lib
from pqd_jax.data import pipeline as data_pipeline
from pqd_jax.data import sources
from pqd_jax.quantization import api as quantize_api
from pqd_jax.quantization import weights as weights_lib
from pqd_jax.quantization.stream import quantize_stream
from pqd_jax.train import steps, trainer

__all__ = ["STAGES", "Artefact", "RunResult", "build_classifier",
           "check_config", "open_split", "run"]

STAGES = ("encode", "quantize", "decode", "relabel", "train", "eval")
_STAGE_FILE = "stage.json"


class Artefact(NamedTuple):
  """One artefact: where it is and the hash of what it depends on."""

  path: str
  hash: str


class RunResult(NamedTuple):
  """What :func:`run` did.

  Attributes:
    accuracies: ``[num_seeds]`` student test accuracies (empty when the eval
      stage did not run).
    seconds: wall time per stage that ran (0 for skipped ones).
    skipped: the stages whose artefacts were already there.
    workdir: where the outputs are.
  """

  accuracies: tuple[float, ...]
  seconds: dict[str, float]
  skipped: tuple[str, ...]
  workdir: str


# What check_config accepts, by dotted config path.
_CONFIG_CHOICES = {
    "baseline": ("", "random"),
    "channels": (1, 3),
    "latents.dtype": latents_lib.DTYPES,
    "quantize.method": quantize_api.METHODS + ("stream",),
    "quantize.weights": weights_lib.WEIGHT_SCHEMES,
    "quantize.init": quantize_api.INITS,
    "teacher.arch": ("convnet", "resnet18"),
    "teacher.optimizer": ("adamw", "sgd"),
    "student.arch": ("convnet", "resnet18"),
    "student.optimizer": ("adamw", "sgd"),
    "student.weights": ("quantizer", "uniform"),
}
_CONFIG_INTEGERS = {  # path: smallest value
    "ipc": 1, "seed": 0, "image_size": 1, "classifier_image_size": 0,
    "quantize.n_init": 1, "quantize.num_iters": 1, "quantize.batch_size": 1,
    "decode.num_steps": 1, "decode.batch_size": 1,
    "teacher.num_steps": 0, "teacher.num_epochs": 0,
    "teacher.batch_size": 1, "teacher.seed": 0,
    "student.num_steps": 0, "student.num_epochs": 0,
    "student.batch_size": 1, "student.num_seeds": 1,
}


def check_config(config: Any) -> None:
  """Checks the config fields that would otherwise fail minutes into a run.

  Raises:
    ValueError: naming the first bad field (``config.<path>``), its value
      and what was expected.
  """
  def get(path):
    value = config
    for part in path.split("."):
      value = value[part]
    return value

  for path, choices in _CONFIG_CHOICES.items():
    value = get(path)
    if isinstance(value, bool) or value not in choices:
      raise ValueError(
          f"config.{path} must be one of {choices}, got {value!r}.")
  for path, minimum in _CONFIG_INTEGERS.items():
    checks.integer(f"config.{path}", get(path), minimum=minimum)
  checks.number("config.quantize.tol", config.quantize.tol, minimum=0)
  strength = checks.number("config.decode.strength", config.decode.strength,
                           minimum=0)
  if strength > 1:
    raise ValueError(
        f"config.decode.strength must be in [0, 1], got {strength!r}.")
  checks.number("config.decode.guidance_scale", config.decode.guidance_scale,
                minimum=0)
  checks.number("config.student.temperature", config.student.temperature,
                positive=True)
  for section in ("teacher", "student"):
    if not (config[section].num_steps or config[section].num_epochs):
      raise ValueError(
          f"config.{section}.num_steps or config.{section}.num_epochs must "
          "be >= 1, got 0 for both.")
  for k in config.report.sweep_ks:
    checks.integer("each of config.report.sweep_ks", k)


def _to_jsonable(value: Any) -> Any:
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, dict):
    return {k: _to_jsonable(v) for k, v in sorted(value.items())}
  if isinstance(value, tuple | list):
    return [_to_jsonable(v) for v in value]
  return value


def config_hash(*parts: Any) -> str:
  """A short stable hash of JSON-able config parts and upstream hashes."""
  text = json.dumps(_to_jsonable(list(parts)), sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


def _is_done(path: str, digest: str) -> bool:
  meta = os.path.join(path, _STAGE_FILE)
  if not os.path.exists(meta):
    return False
  with open(meta) as f:
    return json.load(f).get("hash") == digest


def _prepare(path: str, digest: str) -> None:
  """Moves an artefact made with another config aside; keeps a partial one.

  A directory whose ``stage.json`` names another hash, or whose training
  config differs, is renamed to ``<path>.<its hash>``; one without
  ``stage.json`` but with the same pending hash is kept so training resumes.
  """
  pending = os.path.join(path, "pending.json")
  if not os.path.exists(path):
    os.makedirs(path)
  else:
    old = None
    meta = os.path.join(path, _STAGE_FILE)
    for name in (meta, pending):
      if os.path.exists(name):
        with open(name) as f:
          old = json.load(f).get("hash")
        break
    if old != digest:
      aside = f"{path}.{old or 'old'}"
      while os.path.exists(aside):
        aside += "_"
      os.replace(path, aside)
      os.makedirs(path)
  io.write_json_atomic(pending, {"hash": digest})


def _finish(path: str, digest: str, config: Any, seconds: float) -> None:
  io.write_json_atomic(os.path.join(path, _STAGE_FILE), {
      "hash": digest, "config": _to_jsonable(config), "seconds": seconds,
      "date": time.strftime("%Y-%m-%d %H:%M:%S")})


def build_classifier(config: Any, num_classes: int) -> Any:
  """The teacher/student network named by ``config.arch``.

  Raises:
    ValueError: for an unknown architecture.
  """
  if config.arch == "convnet":
    return models.ConvNet(num_classes=num_classes, width=config.width,
                          depth=config.depth, norm=config.norm)
  if config.arch == "resnet18":
    return models.ResNet18(num_classes=num_classes, stem=config.stem)
  raise ValueError(f"Unknown arch {config.arch!r}; expected 'convnet' or "
                   f"'resnet18'.")


def _aug(config: Any) -> tuple:
  aug = [("flip", bool(config.flip))]
  if config.crop_scale:
    aug.append(("crop_scale", tuple(config.crop_scale)))
  if config.dsa:
    aug.append(("dsa", True))
  if config.get("cutmix", False):
    aug.append(("cutmix", True))
  return tuple(aug)


def open_split(config, split: str,
               image_size: int | None = None) -> sources.ImageSource:
  """The config's ``"train"`` or ``"test"`` split, as the pipeline reads it.

  Args:
    config: a pipeline config (its dataset, splits, data_dir, image_size
      and channels).
    split: ``"train"`` or ``"test"``.
    image_size: instead of ``config.image_size``.

  Raises:
    ValueError: for another ``split``.
  """
  c = config
  splits = {"train": c.train_split, "test": c.test_split}
  if split not in splits:
    raise ValueError(f"split {split!r} is not 'train' or 'test'.")
  return sources.open_source(c.dataset, splits[split],
                             data_dir=c.data_dir or None,
                             image_size=image_size or c.image_size,
                             channels=c.channels)


class _Context:
  """The run's config, workdir, sources and logging."""

  def __init__(self, config, workdir, stages, progress, log):
    self.config, self.workdir = config, os.path.abspath(workdir)
    self.stages, self.progress, self.log = set(stages), progress, log
    self.seconds: dict[str, float] = {}
    self.skipped: list[str] = []
    self._sources: dict[str, sources.ImageSource] = {}

  def source(self, split: str,
             image_size: int | None = None) -> sources.ImageSource:
    """``"train"`` or ``"test"`` (the config's splits) at ``image_size``."""
    c = self.config
    size = image_size or c.image_size
    if (split, size) not in self._sources:
      self._sources[split, size] = open_split(c, split, size)
    return self._sources[split, size]

  def path(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  def stage(self, stage: str, name: str, digest: str,
            fn: Callable[[str], None], config: Any, *,
            shared: bool = False) -> Artefact:
    """Runs ``fn(path)`` unless the artefact is there with this hash.

    In a multi-process run every process runs ``fn`` (its computations are
    collective); process 0 writes the artefact and the others write into a
    scratch directory that is removed afterwards, unless ``shared`` (``fn``
    coordinates its own writes, as the orbax checkpoints of training do).
    """
    path = self.path(name)
    done = _is_done(path, digest)
    distributed.barrier(f"check {name}")
    if done:
      self.skipped.append(name)
      self.log(f"{stage:>8}: {name} cached ({digest})")
      return Artefact(path, digest)
    if stage not in self.stages:
      raise ValueError(
          f"The {stage!r} stage is needed for {name!r} (config hash {digest}) "
          f"but was not requested; add it to --stages or run without "
          f"--stages.")
    coordinator = distributed.is_coordinator()
    target = path
    if coordinator:
      _prepare(path, digest)
    elif not shared:
      target = os.path.join(self.workdir, ".scratch",
                            f"process{jax.process_index()}", name)
      shutil.rmtree(target, ignore_errors=True)
      os.makedirs(target)
    distributed.barrier(f"prepare {name}")
    t0 = time.perf_counter()
    fn(target)
    seconds = time.perf_counter() - t0
    distributed.barrier(f"run {name}")
    if coordinator:
      _finish(path, digest, config, seconds)
    elif target != path:
      shutil.rmtree(target, ignore_errors=True)
    distributed.barrier(f"finish {name}")
    self.seconds[name] = seconds
    self.log(f"{stage:>8}: {name} done in {seconds:.1f} s ({digest})")
    return Artefact(path, digest)


def _autoencoder(ctx: _Context) -> tuple[Artefact, ae_lib.Autoencoder]:
  c = ctx.config.autoencoder
  digest = config_hash(ctx.config.dataset, c)

  def make(path):
    if c.pretrained:
      if c.pretrained == embedded.EMBEDDED:
        ae = embedded.load_autoencoder(ctx.config.dataset)
      else:
        ae = ae_lib.load_pretrained(c.pretrained,
                                    subfolder=c.get("subfolder") or None,
                                    revision=c.get("revision") or None)
      with io.atomic_directory(os.path.join(path, "final")) as tmp:
        ae_lib.save_pretrained(ae, tmp)
    else:
      ae_train.train_autoencoder(c, ctx.source("train"), path,
                                 progress=ctx.progress)

  art = ctx.stage("encode", "autoencoder", digest, make, c)
  return art, ae_lib.load_pretrained(os.path.join(art.path, "final"))


def _latents(ctx, ae_art, ae) -> Artefact:
  c = ctx.config.latents
  digest = config_hash(ae_art.hash, c)

  def make(path):
    latents_lib.encode_source(ae, ctx.source("train"), path, dtype=c.dtype,
                              sample=c.sample,
                              rng=jax.random.key(ctx.config.seed),
                              progress=ctx.progress)

  return ctx.stage("encode", "latents", digest, make, c)


# Classes per quantize_stream call of the stream method, which are also the
# classes it seeds together (``seed_classes``): the unit of work shared out
# among the processes (fixed, so results do not depend on the process count).
STREAM_CLASS_GROUP = 64


def _quantizer(directory: str, c: Any, seed: int,
               scratch: str) -> Callable[[int], Any]:
  """``k -> QuantizeResult``: the config's quantizer on a latents artefact.

  ``method="stream"`` reads the class files in chunks on every call
  (:func:`pqd_jax.quantize_stream`, ``num_iters`` CLVQ passes; memory
  independent of the dataset size), :data:`STREAM_CLASS_GROUP` classes at a
  time: in a multi-process run each process streams only its groups' files
  and shares its results through ``scratch`` (on the shared workdir).
  ``"lloyd"`` and ``"clvq"`` hold the points on the devices
  (:func:`pqd_jax.quantize`), each process reading from the memory-mapped
  class files only the rows of its own devices.
  """
  if c.method == "stream":
    return lambda k: _stream_quantize(directory, c, seed, scratch, k)
  # Read lazily: each process reads only its devices' rows (once per K).
  z, y = latents_lib.load(directory, lazy=True, dtype="float32")
  return lambda k: quantize_api.quantize(
      z, y, k, method=c.method, weights=c.weights, init=c.init,
      n_init=c.n_init, num_iters=c.num_iters, tol=c.tol,
      batch_size=c.batch_size, rng=jax.random.key(seed))


def _stream_quantize(directory: str, c: Any, seed: int, scratch: str,
                     k: int) -> quantize_api.QuantizeResult:
  num_classes = len(latents_lib.read_index(directory)["counts"])
  groups = [list(range(g, min(g + STREAM_CLASS_GROUP, num_classes)))
            for g in range(0, num_classes, STREAM_CLASS_GROUP)]
  local_mesh = sharding.data_mesh(jax.local_devices())
  mine = range(jax.process_index(), len(groups), jax.process_count())
  parts = {}
  for g in mine:
    out = quantize_stream(
        latents_lib.stream(directory, classes=groups[g]), k,
        weights=c.weights, init=c.init, n_init=c.n_init,
        num_passes=c.num_iters, tol=c.tol, batch_size=c.batch_size,
        seed_classes=STREAM_CLASS_GROUP, rng=jax.random.key(seed),
        mesh=local_mesh)
    parts[g] = {f: np.asarray(v) for f, v in out._asdict().items()}
  if jax.process_count() > 1:
    os.makedirs(scratch, exist_ok=True)
    name = lambda g: os.path.join(scratch, f"k{k}_group{g}.npz")
    for g, fields in parts.items():
      np.savez(name(g) + ".tmp.npz", **fields)
      os.replace(name(g) + ".tmp.npz", name(g))
    distributed.barrier(f"stream k={k} written")
    for g in range(len(groups)):
      if g not in parts:
        with np.load(name(g)) as f:
          parts[g] = dict(f)
    distributed.barrier(f"stream k={k} read")
    for g in mine:  # every process has read them
      os.remove(name(g))
  return quantize_api.QuantizeResult(**{
      f: np.concatenate([parts[g][f] for g in range(len(groups))])
      for f in quantize_api.QuantizeResult._fields})


def _quantization(ctx, lat_art) -> Artefact:
  c = ctx.config.quantize
  digest = config_hash(lat_art.hash, c, ctx.config.ipc, ctx.config.seed)

  def make(path):
    out = _quantizer(lat_art.path, c, ctx.config.seed,
                     ctx.path(".scratch/stream"))(ctx.config.ipc)
    tmp = os.path.join(path, "quantization.tmp.npz")
    np.savez(tmp, centroids=np.asarray(out.centroids),
             weights=np.asarray(out.weights), counts=np.asarray(out.counts),
             distortion=np.asarray(out.distortion),
             classes=np.asarray(out.classes))
    os.replace(tmp, os.path.join(path, "quantization.npz"))

  return ctx.stage("quantize", "quantization", digest, make, c)


def _sweep(ctx, lat_art) -> Artefact:
  """Distortion versus K (``report.sweep_ks``) with the same quantizer."""
  c, q = ctx.config.report, ctx.config.quantize
  digest = config_hash(lat_art.hash, q, c, ctx.config.seed)

  def make(path):
    index = latents_lib.read_index(lat_art.path)
    smallest = min(index["counts"])
    ks = sorted({int(k) for k in c.sweep_ks if 1 <= int(k) <= smallest})
    rows = []
    quantize_k = _quantizer(lat_art.path, q, ctx.config.seed,
                            ctx.path(".scratch/stream"))
    for k in ks:
      out = quantize_k(k)
      rows.append(np.asarray(out.distortion, np.float64))
    dim = int(np.prod(index["latent_shape"]))
    tmp = os.path.join(path, "sweep.tmp.npz")
    np.savez(tmp, ks=np.asarray(ks, np.int32),
             distortion=np.asarray(rows).reshape(len(ks), -1), dim=dim)
    os.replace(tmp, os.path.join(path, "sweep.npz"))
    if len(ks) >= 2:
      _plot_sweep(np.asarray(ks), np.asarray(rows), dim,
                  os.path.join(path, "distortion_vs_k.png"))

  return ctx.stage("quantize", "quantization_sweep", digest, make, c)


def fitted_slope(ks: np.ndarray, distortion: np.ndarray) -> float:
  """Least-squares slope of log(mean distortion over classes) vs log K."""
  mean = np.asarray(distortion, np.float64).mean(axis=1)
  return float(np.polyfit(np.log(ks), np.log(mean), 1)[0])


def slope_sentence(slope: float, dim: int) -> str:
  """The fitted distortion-vs-K slope next to the theory's -2/d rate."""
  text = (f"Fitted log-log slope {slope:.3f}; Zador's asymptotic rate for a "
          f"density on the d = {dim} latent dimensions is -2/d = "
          f"{-2 / dim:.4f}.")
  if slope < 0:
    text += (f" The measured slope is the rate of a {2 / -slope:.1f}-"
             "dimensional density (-2/d' = slope): the latents of a class "
             "concentrate near a set of that effective dimension.")
  return text


def _plot_sweep(ks, distortion, dim, path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  mean = distortion.mean(axis=1)
  slope = fitted_slope(ks, distortion)
  fig, ax = plt.subplots(figsize=(5, 3.6), dpi=100)
  for row in distortion.T:
    ax.loglog(ks, row, color="0.8", lw=0.8)
  ax.loglog(ks, mean, "o-", color="C0",
            label=f"mean over classes (slope {slope:.3f})")
  ax.loglog(ks, mean[0] * (ks / ks[0]) ** (-2 / dim), "--", color="C1",
            label=f"theory K^(-2/d), d = {dim}")
  ax.set_xlabel("K (centroids per class)")
  ax.set_ylabel("distortion = W2² of the quantizer")
  ax.legend(fontsize=8)
  fig.tight_layout()
  tmp = f"{path}.{os.getpid()}.tmp.png"  # processes may share the plot
  fig.savefig(tmp)
  plt.close(fig)
  os.replace(tmp, path)


def _prior(ctx, lat_art, class_names):
  from pqd_jax import prior as prior_lib

  c = ctx.config.prior
  digest = config_hash(lat_art.hash, c)

  def make(path):
    if c.pretrained == embedded.EMBEDDED:
      prior_lib.save_prior(embedded.load_prior(ctx.config.dataset),
                           os.path.join(path, "final"))
    elif c.pretrained:
      from pqd_jax.prior import stable_diffusion

      p = stable_diffusion.load_stable_diffusion(
          c.pretrained, class_names_lib.readable(class_names),
          prompt_template=c.prompt_template,
          negative_prompt=c.negative_prompt, revision=c.revision or None)
      prior_lib.save_prior(p, os.path.join(path, "final"))
    else:
      # Lazy: each process reads only its devices' latents of each batch.
      z, y = latents_lib.load(lat_art.path, lazy=True, dtype="float32")
      prior_lib.train_prior(z, y, path, config=c, class_names=class_names,
                            seed=c.seed, progress=ctx.progress)

  art = ctx.stage("decode", "prior", digest, make, c)
  loaded = []

  def get_prior():  # loaded only when the synthetic set is (re)made
    if not loaded:
      loaded.append(prior_lib.load_prior(os.path.join(art.path, "final")))
    return loaded[0]

  return art, get_prior


def _synthetic(ctx, q_art, prior_art, ae, get_prior, class_names):
  from pqd_jax import prior as prior_lib

  c = ctx.config.decode
  if ctx.config.baseline not in ("", "random"):
    raise ValueError(f"baseline must be '' (distil) or 'random', got "
                     f"{ctx.config.baseline!r}.")
  if ctx.config.baseline == "random":  # depends on the data only
    digest = config_hash("random", ctx.config.dataset, ctx.config.ipc,
                         ctx.config.seed, ctx.config.image_size)
  else:
    digest = config_hash(q_art.hash, prior_art.hash, c, ctx.config.seed)

  def make(path):
    if ctx.config.baseline == "random":
      _write_random(ctx, path, class_names)
      return
    with np.load(os.path.join(q_art.path, "quantization.npz")) as q:
      cents, weights, classes = q["centroids"], q["weights"], q["classes"]
    k = cents.shape[1]
    labels = np.repeat(classes, k).astype(np.int32)
    z = cents.reshape(-1, *cents.shape[2:])
    if c.strength > 0:
      z = prior_lib.img2img(
          get_prior(), z, labels, strength=c.strength,
          guidance_scale=c.guidance_scale, num_steps=c.num_steps,
          rng=jax.random.key(ctx.config.seed), batch_size=c.batch_size)
    images = np.clip(ae_lib.decode(ae, z), -1.0, 1.0).astype(np.float32)
    _save_set(path, images, labels, weights.reshape(-1).astype(np.float32),
              class_names, len(classes))

  return ctx.stage("decode", "synthetic", digest, make, c)


def _save_set(path, images, labels, weights, class_names, rows) -> None:
  tmp = os.path.join(path, "images.tmp.npz")
  np.savez(tmp, images=images, labels=labels, weights=weights,
           class_names=np.array(class_names))
  os.replace(tmp, os.path.join(path, "images.npz"))
  _write_folder(os.path.join(path, "folder"), images, labels, weights,
                class_names)
  visualize.image_grid(images, rows).save(os.path.join(path, "grid.png"))


def _write_random(ctx, path, class_names) -> None:
  """The ``random`` baseline: IPC real images per class, uniform weights."""
  src = ctx.source("train")
  idx = trainer.random_subset(src.labels, ctx.config.ipc, ctx.config.seed)
  images = data_pipeline.to_unit_range(src.read(idx)).astype(np.float32)
  labels = src.labels[idx].astype(np.int32)
  order = np.argsort(labels, kind="stable")
  _save_set(path, images[order], labels[order],
            np.ones(len(idx), np.float32), class_names,
            len(np.unique(labels)))


def folder_names(class_names: Sequence[str]) -> list[str]:
  """One directory name per class: the class name made safe for a path.

  Path separators become ``_`` (Fashion-MNIST's ``"T-shirt/top"`` would
  otherwise nest a directory), an empty or dot-only name becomes
  ``class_<label>``, and a name that two classes would share gets its
  label appended, so every class has its own directory.
  """
  names = []
  for label, name in enumerate(class_names):
    safe = str(name).replace("/", "_").replace("\\", "_")
    if not safe.strip("."):
      safe = f"class_{label}"
    names.append(safe)
  counts = collections.Counter(names)
  out, used = [], set()
  for label, name in enumerate(names):
    unique = name if counts[name] == 1 else f"{name}_{label}"
    while unique in used:
      unique += f"_{label}"
    used.add(unique)
    out.append(unique)
  return out


def _write_folder(root: str, images, labels, weights, class_names) -> None:
  """The synthetic set as ``<class>/<i>.png`` plus ``weights.csv``.

  ``<class>`` is :func:`folder_names`'s directory; ``weights.csv`` keeps the
  class name itself.
  """
  dirs = folder_names(class_names)
  with io.atomic_directory(root) as tmp:
    rows = []
    for i, (img, y, w) in enumerate(zip(images, labels, weights,
                                        strict=True)):
      name = os.path.join(dirs[y], f"{i:06d}.png")
      os.makedirs(os.path.join(tmp, dirs[y]), exist_ok=True)
      arr = ((img + 1.0) * 127.5).round().astype(np.uint8)
      Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(
          os.path.join(tmp, name))
      rows.append((name, class_names[y], int(y), float(w)))
    with open(os.path.join(tmp, "weights.csv"), "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(("file", "class", "label", "weight"))
      writer.writerows(rows)


def _teacher(ctx, num_classes):
  c = ctx.config.teacher
  size = _classifier_size(ctx.config)
  digest = config_hash(ctx.config.dataset, ctx.config.train_split, size, c)
  model = build_classifier(c, num_classes)

  def make(path):
    if c.checkpoint == embedded.EMBEDDED:
      embedded.load_teacher_variables(ctx.config.dataset, model,
                                      _image_shape(ctx.config))
      if distributed.is_coordinator():
        io.write_json_atomic(os.path.join(path, "source.json"), {
            "embedded": embedded.provenance(ctx.config.dataset, "teacher")})
    elif c.checkpoint:
      variables = trainer.restore_variables(
          model, c.checkpoint, _image_shape(ctx.config))
      if distributed.is_coordinator():
        io.write_json_atomic(os.path.join(path, "source.json"),
                             {"checkpoint": os.path.abspath(c.checkpoint)})
      del variables
    else:
      trainer.train_teacher(
          model, ctx.source("train", size), path,
          num_steps=None if c.num_epochs else c.num_steps,
          num_epochs=c.num_epochs or None, batch_size=c.batch_size,
          optimizer=c.optimizer,
          learning_rate=c.learning_rate, weight_decay=c.weight_decay,
          warmup_steps=c.warmup_steps, aug=_aug(c), seed=c.seed,
          progress=ctx.progress)

  art = ctx.stage("relabel", "teacher", digest, make, c, shared=True)
  if c.checkpoint == embedded.EMBEDDED:
    return art, model, embedded.load_teacher_variables(
        ctx.config.dataset, model, _image_shape(ctx.config))
  where = c.checkpoint or art.path
  return art, model, trainer.restore_variables(model, where,
                                               _image_shape(ctx.config))


def _classifier_size(config) -> int:
  return config.classifier_image_size or config.image_size


def _image_shape(config) -> tuple[int, int, int]:
  size = _classifier_size(config)
  return (size, size, config.channels)


def student_set(synthetic_dir: str, weights: str):
  """``(images, labels, weights)`` of a synthetic artefact as students see it.

  Args:
    synthetic_dir: a ``synthetic`` artefact (``images.npz``).
    weights: ``config.student.weights``: ``"quantizer"`` (the set's own
      weights) or ``"uniform"`` (ones).

  Raises:
    ValueError: for another ``weights``.
  """
  if weights not in ("quantizer", "uniform"):
    raise ValueError(f"student.weights must be 'quantizer' or 'uniform', got "
                     f"{weights!r}.")
  with np.load(os.path.join(synthetic_dir, "images.npz")) as s:
    images, labels, set_weights = s["images"], s["labels"], s["weights"]
  if weights == "uniform":
    set_weights = np.ones_like(set_weights)
  return images, labels, set_weights


def _students(ctx, syn_art, teacher_art, teacher, tvars, num_classes):
  c = ctx.config.student
  arts = []
  images, labels, weights = student_set(syn_art.path, c.weights)
  size = _classifier_size(ctx.config)
  num_steps = trainer.steps_from_epochs(
      None if c.num_epochs else c.num_steps, c.num_epochs or None,
      len(images), c.batch_size)
  # Student ``seed`` does not depend on how many seeds there are, so its hash
  # does not either: a 3-seed run reuses a 1-seed run's seed 0. (The count is
  # hashed as 1, so students made before this rule by 1-seed runs are kept.)
  per_seed = {**_to_jsonable(c), "num_seeds": 1}
  for seed in range(c.num_seeds):
    digest = config_hash(syn_art.hash, teacher_art.hash, per_seed, size, seed)

    def make(path, seed=seed):
      trainer.train_student(
          build_classifier(c, num_classes),
          data_pipeline.resize_images(images, size), labels, weights, path,
          num_classes=num_classes, num_steps=num_steps,
          batch_size=c.batch_size, optimizer=c.optimizer,
          learning_rate=c.learning_rate, weight_decay=c.weight_decay,
          warmup_steps=int(c.warmup_fraction * num_steps),
          teacher=teacher if c.soft_labels else None,
          teacher_variables=tvars if c.soft_labels else None,
          temperature=c.temperature, aug=_aug(c), seed=seed,
          progress=ctx.progress)

    arts.append(ctx.stage("train", f"student/seed{seed}", digest, make, c,
                          shared=True))
  return arts


def _evaluate(ctx, student_arts, teacher, tvars, quant_art, sweep_art,
              num_classes):
  c = ctx.config.student
  digest = config_hash([a.hash for a in student_arts], sweep_art.hash,
                       ctx.config.test_split)
  results = {}

  def make(path):
    test = ctx.source("test", _classifier_size(ctx.config))
    # Read when indexed: each process reads only its devices' test images,
    # and no process holds the whole split (ImageNet: 50k × 224² × 3).
    x = sharding.LazyRows(
        lambda a, b: data_pipeline.to_unit_range(test.read(range(a, b))),
        (len(test), *test[0][0].shape), np.float32)
    model = build_classifier(c, num_classes)
    accs = []
    for art in student_arts:
      variables = trainer.restore_variables(model, art.path,
                                            _image_shape(ctx.config))
      pred = steps.predict(model, variables, x)
      accs.append(float(np.mean(pred == test.labels)))
    teacher_acc = float(np.mean(steps.predict(teacher, tvars, x)
                                == test.labels))
    distortion = []
    if quant_art.path:
      with np.load(os.path.join(quant_art.path, "quantization.npz")) as q:
        distortion = q["distortion"].tolist()
    sweep = {}
    if sweep_art.path:
      with np.load(os.path.join(sweep_art.path, "sweep.npz")) as s:
        ks, dist, dim = s["ks"], s["distortion"], int(s["dim"])
      sweep = {"ks": ks.tolist(), "mean_distortion":
               dist.mean(axis=1).tolist(), "dim": dim,
               "fitted_slope": (fitted_slope(ks, dist) if len(ks) >= 2
                                else None),
               "plot": (os.path.relpath(os.path.join(
                   sweep_art.path, "distortion_vs_k.png"), ctx.workdir)
                        if len(ks) >= 2 else None)}
    mean, std = trainer.mean_std(accs)
    results.update({
        "dataset": ctx.config.dataset, "ipc": ctx.config.ipc,
        "baseline": ctx.config.baseline or "distilled",
        "weights": ctx.config.quantize.weights,
        "student_weights": c.weights, "strength": ctx.config.decode.strength,
        "accuracies": accs, "accuracy_mean": mean, "accuracy_std": std,
        "teacher_accuracy": teacher_acc, "distortion": distortion,
        "sweep": sweep, "test_images": len(test)})
    if distributed.is_coordinator():
      io.write_json_atomic(os.path.join(ctx.workdir, "results.json"),
                           results)
      history = _append_history(ctx.workdir, results)
      _write_report(os.path.join(ctx.workdir, "report.md"), results, history)

  ctx.stage("eval", "eval", digest, make, c)
  with open(ctx.path("results.json")) as f:
    return json.load(f)


_HISTORY = "results_history.jsonl"
_SETTING = ("dataset", "baseline", "weights", "student_weights", "strength")


def _append_history(workdir: str, results: dict) -> list[dict]:
  """Appends this evaluation to the workdir's history; returns all rows.

  A row cut short by a kill is skipped when read (and the line ended).
  """
  path = os.path.join(workdir, _HISTORY)
  rows = []
  if os.path.exists(path):
    with open(path) as f:
      text = f.read()
    for line in text.splitlines():
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  row = {k: results[k] for k in (*_SETTING, "ipc", "accuracies",
                                 "accuracy_mean", "accuracy_std")}
  with open(path, "a") as f:
    if os.path.exists(path) and os.path.getsize(path) and not text.endswith(
        "\n"):
      f.write("\n")
    f.write(json.dumps(row) + "\n")
  return rows + [row]


def accuracy_by_ipc(history: list[dict], setting: dict) -> dict[int, dict]:
  """The latest evaluation of each IPC with the same setting as ``setting``."""
  by_ipc = {}
  for row in history:
    if all(row.get(k) == setting.get(k) for k in _SETTING):
      by_ipc[int(row["ipc"])] = row
  return dict(sorted(by_ipc.items()))


def _plot_accuracy(by_ipc: dict[int, dict], path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  ipcs = np.asarray(list(by_ipc))
  mean = 100 * np.asarray([r["accuracy_mean"] for r in by_ipc.values()])
  std = 100 * np.asarray([r["accuracy_std"] for r in by_ipc.values()])
  fig, ax = plt.subplots(figsize=(5, 3.6), dpi=100)
  ax.errorbar(ipcs, mean, yerr=std, fmt="o-", capsize=3)
  ax.set_xscale("log")
  ax.set_xlabel("IPC (images per class)")
  ax.set_ylabel("student test accuracy (%)")
  fig.tight_layout()
  tmp = f"{path}.{os.getpid()}.tmp.png"  # processes may share the plot
  fig.savefig(tmp)
  plt.close(fig)
  os.replace(tmp, path)


def _write_report(path: str, r: dict, history: list[dict] = ()) -> None:
  lines = [
      f"# pqd_jax distillation report: {r['dataset']}, IPC {r['ipc']}", "",
      "| IPC | quantizer weights | student weights | strength | student "
      "accuracy (mean ± std) | seeds | teacher (whole data) |",
      "|---|---|---|---|---|---|---|",
      f"| {r['ipc']} | {r['weights']} | {r['student_weights']} | "
      f"{r['strength']} | {100 * r['accuracy_mean']:.2f} ± "
      f"{100 * r['accuracy_std']:.2f}% | {len(r['accuracies'])} | "
      f"{100 * r['teacher_accuracy']:.2f}% |", "",
      f"Set: {r['baseline']}. Per-class distortion (W2² of the "
      f"mass-weighted quantizer): "
      f"{', '.join(f'{d:.3f}' for d in r['distortion']) or 'n/a'}.", "",
      f"Test images: {r['test_images']}. The synthetic set is in "
      "`synthetic/` (`images.npz`, `folder/`, `grid.png`).", ""]
  sweep = r.get("sweep") or {}
  if sweep.get("ks"):
    lines += [
        "## Distortion versus K", "",
        "Mean over classes of the distortion of the mass-weighted quantizer "
        "(its W2², exactly), latent dimension d = "
        f"{sweep['dim']}:", "",
        "| K | " + " | ".join(str(k) for k in sweep["ks"]) + " |",
        "|---|" + "---|" * len(sweep["ks"]),
        "| distortion | " + " | ".join(
            f"{d:.4g}" for d in sweep["mean_distortion"]) + " |",
        "| W2 | " + " | ".join(
            f"{d ** 0.5:.4g}" for d in sweep["mean_distortion"]) + " |", ""]
    if sweep.get("fitted_slope") is not None:
      lines += [slope_sentence(sweep["fitted_slope"], sweep["dim"]), "",
                f"![distortion vs K]({sweep['plot']})", ""]
  by_ipc = accuracy_by_ipc(list(history), r)
  if len(by_ipc) >= 2:
    plot = os.path.join(os.path.dirname(path), "accuracy_vs_ipc.png")
    _plot_accuracy(by_ipc, plot)
    lines += [
        "## Accuracy versus IPC", "",
        "Every IPC evaluated in this workdir with the same dataset, "
        "baseline, weights and strength (`results_history.jsonl`; the "
        "latest run of each IPC):", "",
        "| IPC | student accuracy (mean ± std) | seeds |", "|---|---|---|"]
    lines += [f"| {ipc} | {100 * row['accuracy_mean']:.2f} ± "
              f"{100 * row['accuracy_std']:.2f}% | {len(row['accuracies'])} |"
              for ipc, row in by_ipc.items()]
    lines += ["", "![accuracy vs IPC](accuracy_vs_ipc.png)", ""]
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write("\n".join(lines))
  os.replace(tmp, path)


def run(config: Any, workdir: str, *, stages: Sequence[str] = STAGES,
        progress: bool = True,
        log: Callable[[str], None] = print) -> RunResult:
  """Runs (or resumes) the pipeline.

  Args:
    config: a config of ``pqd_jax/configs`` (see ``fashion_mnist.py``).
    workdir: where every artefact goes (created; never wiped).
    stages: the stages to run; the artefacts of the others must already be
      in the workdir for the current config.
    progress: progress bars on the long loops.
    log: receives one line per stage.

  Returns:
    What ran, for how long, and the accuracies.

  Raises:
    ValueError: for an unknown stage, a bad config, or a stage that is
      needed but neither cached nor requested.
  """
  unknown = [s for s in stages if s not in STAGES]
  if unknown:
    raise ValueError(f"Unknown stages {unknown}; expected a subset of "
                     f"{STAGES}.")
  check_config(config)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"workdir {workdir!r} exists and is not a directory.")
  os.makedirs(workdir, exist_ok=True)
  if distributed.is_coordinator():
    io.write_json_atomic(os.path.join(workdir, "config.json"),
                         _to_jsonable(config))
  ctx = _Context(config, workdir, stages, progress, log)
  class_names = tuple(ctx.source("train").class_names)
  num_classes = len(class_names)
  # Stages after the last requested one are not run (``--stages=encode,
  # quantize`` stops there); earlier ones must be cached or requested.
  last = max((STAGES.index(s) for s in stages), default=-1)
  wanted = lambda stage: STAGES.index(stage) <= last
  accuracies: tuple[float, ...] = ()

  def result():
    return RunResult(accuracies=accuracies, seconds=ctx.seconds,
                     skipped=tuple(ctx.skipped), workdir=ctx.workdir)

  none = Artefact("", "none")
  if config.baseline == "random":  # real images: no latent space needed
    ae = q_art = prior_art = sweep_art = none
    get_prior = lambda: None
  else:
    ae_art, ae = _autoencoder(ctx)
    lat_art = _latents(ctx, ae_art, ae)
    if not wanted("quantize"):
      return result()
    q_art = _quantization(ctx, lat_art)
    sweep_art = _sweep(ctx, lat_art) if config.report.sweep_ks else none
    if not wanted("decode"):
      return result()
    if config.decode.strength > 0:
      prior_art, get_prior = _prior(ctx, lat_art, class_names)
    else:  # decode only: no prior
      prior_art, get_prior = none, lambda: None
  if not wanted("decode"):
    return result()
  syn_art = _synthetic(ctx, q_art, prior_art, ae, get_prior, class_names)
  if not wanted("relabel"):
    return result()
  t_art, teacher, tvars = _teacher(ctx, num_classes)
  if not wanted("train"):
    return result()
  student_arts = _students(ctx, syn_art, t_art, teacher, tvars, num_classes)
  if not wanted("eval"):
    return result()
  results = _evaluate(ctx, student_arts, teacher, tvars, q_art, sweep_art,
                      num_classes)
  accuracies = tuple(results["accuracies"])
  return RunResult(accuracies=accuracies, seconds=ctx.seconds,
                   skipped=tuple(ctx.skipped), workdir=ctx.workdir)
