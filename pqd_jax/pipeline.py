"""The distillation pipeline: encode, quantize, decode, relabel, train, eval.

Each stage is a cached, resumable artefact under the workdir.
The stages live in :mod:`pqd_jax.stages` (one module each); the cache, the
digests and the atomic writers in :mod:`pqd_jax.workdir`; ``report.md`` in
:mod:`pqd_jax.report`. A stage whose artefact is there for the same config
paths, upstream artefacts and data is skipped; one made from another config
or data, or unreadable, is moved aside (``<name>.<old digest>``) and made
again; training stages resume from their checkpoints, so a killed run
started again with the same command finishes the job.
"""

import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax

from pqd_jax import distributed, report, workdir
from pqd_jax.configs.checks import check_config
from pqd_jax.data import splits
from pqd_jax.stages import STEPS, decode, encode, quantize, relabel, train
from pqd_jax.stages import eval as evaluation

__all__ = ["STAGES", "RunResult", "check_config", "run"]

STAGES = STEPS


class RunResult(NamedTuple):
  """What :func:`run` did.

  Attributes:
    accuracies: ``[num_seeds]`` student test accuracies (empty when the eval
      stage did not run).
    seconds: wall time per artefact made (cached ones are not listed).
    skipped: the artefacts that were already there.
    workdir: where the outputs are.
  """

  accuracies: tuple[float, ...]
  seconds: dict[str, float]
  skipped: tuple[str, ...]
  workdir: str


def _check_student_batch(config, num_classes: int) -> None:
  """The student's batch splits over the devices and passes as configured.

  The batch is capped at the set's size unless ``student.fill_batch``.

  Raises:
    ValueError: if the capped batch does not divide over the devices and
      the gradient-accumulation passes, with the values that would.
  """
  s = config.student
  batch = (s.batch_size if s.fill_batch
           else min(s.batch_size, config.ipc * num_classes))
  devices, passes = jax.device_count(), s.grad_accumulation
  tiles = config.factor * config.factor  # training images per stored one
  parts = devices * passes
  if batch % devices or (batch // devices * tiles) % passes:
    raise ValueError(
        f"the student's batch is {batch} images (config.student.batch_size="
        f"{s.batch_size}, capped at the set's {config.ipc * num_classes}), "
        f"which does not split into {jax.device_count()} device(s) x "
        f"{s.grad_accumulation} pass(es) (config.student.grad_accumulation)"
        f"; use a batch that is a multiple of {parts}, or fewer passes.")


def run(config: Any, workdir_path: str, *, stages: Sequence[str] = STAGES,
        progress: bool = True,
        log: Callable[[str], None] = print) -> RunResult:
  """Runs (or resumes) the pipeline.

  Args:
    config: a config of ``pqd_jax/configs`` (see ``fashion_mnist.py``).
    workdir_path: where every artefact goes (created; never wiped).
    stages: the steps to run; the artefacts of the others must already be
      in the workdir for the current config. Steps after the last one
      named are not run.
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
  if os.path.exists(workdir_path) and not os.path.isdir(workdir_path):
    raise ValueError(f"workdir {workdir_path!r} exists and is not a "
                     "directory.")
  # tfds labels are scanned once per dataset version into the workdir.
  data = splits.Splits(config, label_cache=os.path.join(workdir_path,
                                                         ".labels"))
  data.check(config.ipc, config.factor)
  _check_student_batch(config, len(data.source("train").class_names))
  wd = workdir.Workdir(workdir_path, steps=stages,
                       fingerprint=data.fingerprint, log=log,
                       progress=progress)
  if distributed.is_coordinator():
    workdir.write_json(wd.path("config.json"), workdir.to_jsonable(config))
    report.retire(wd.root, log)
  last = max(STAGES.index(s) for s in stages) if stages else -1
  wanted = lambda step: STAGES.index(step) <= last
  done = lambda accuracies=(): RunResult(tuple(accuracies), wd.seconds,
                                         tuple(wd.skipped), wd.root)

  num_classes = len(data.source("train").class_names)
  q_art = sweep_art = prior_art = teacher_art = None
  if config.baseline == "random":  # real images: no latent space needed
    if not wanted("decode"):
      return done()
    syn_art = decode.random_subset(wd, config, data)
  else:
    ae_art = encode.autoencoder(wd, config, data)
    lat_art = encode.latents(wd, config, data, ae_art)
    if not wanted("quantize"):
      return done()
    q_art = quantize.quantization(wd, config, lat_art)
    if config.report.sweep_ks:
      sweep_art = quantize.sweep(wd, config, lat_art)
    if not wanted("decode"):
      return done()
    if decode.needs_teacher(config):  # it chooses the set's images
      teacher_art = relabel.teacher(wd, config, data, num_classes)
    if config.decode.images == "nearest":  # real images, no generator
      syn_art = decode.nearest_real(wd, config, data, q_art, lat_art,
                                    teacher_art)
    else:
      if config.decode.strength > 0:  # 0: the centroids decoded, no prior
        prior_art = decode.prior(wd, config, data, lat_art)
      syn_art = decode.synthetic_set(wd, config, data, q_art, ae_art,
                                     prior_art, teacher_art)
  if not wanted("relabel"):
    return done()
  if teacher_art is None:
    teacher_art = relabel.teacher(wd, config, data, num_classes)
  if not wanted("train"):
    return done()
  student_arts = [
      train.student(wd, config, seed, syn_art, teacher_art, num_classes, data)
      for seed in train.student_seeds(config)]
  if not wanted("eval"):
    return done()
  eval_art = evaluation.evaluate(wd, config, data, student_arts, teacher_art,
                                 q_art, sweep_art, num_classes)
  results = evaluation.results(eval_art)
  if distributed.is_coordinator():
    workdir.write_json(wd.path(evaluation.RESULTS), results)
    report.write_report(wd.root, results)
  return done(results["accuracies"])
