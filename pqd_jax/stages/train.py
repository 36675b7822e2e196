"""Train: students from scratch on the weighted synthetic set."""

import math
import os

import numpy as np

from pqd_jax import models, sharding, workdir
from pqd_jax.data import sources, splits, synthetic
from pqd_jax.stages import relabel
from pqd_jax.train import evaluation, steps, trainer

__all__ = ["CURVE_FILE", "STUDENT_READS", "curve", "curve_split",
           "student", "student_seeds", "student_stage"]

# Every student field but ``num_seeds`` and ``seed`` (in the stage's name):
# a student does not depend on how many there are, so a 3-seed run reuses a
# 1-seed run's first student. ``fill_batch`` and ``eval_points``: _reads.
STUDENT_READS = tuple(f"student.{f}" for f in (
    "arch", "width", "depth", "norm", "stem", "weights", "soft_labels",
    "temperature", "num_steps", "num_epochs", "batch_size", "optimizer",
    "learning_rate", "weight_decay", "decay_norm_and_bias", "warmup_fraction",
    "grad_accumulation", "flip", "crop_scale", "dsa", "cutmix")
) + relabel.IMAGE + ("factor",)
# Where the training loop writes its rows (the test accuracy curve's too).
CURVE_FILE = "metrics.jsonl"


def _reads(c) -> tuple[str, ...]:
  """The student's reads; with a curve, the test split it is measured on.

  The fields added since are read only when they change what is trained, so
  the students trained before them keep their digests.
  """
  reads = STUDENT_READS
  if c.student.fill_batch:
    reads += ("student.fill_batch",)
  if c.student.eval_points:
    reads += ("student.eval_points", "student.eval_images", "dataset",
              "test_crop")
  return reads


def student_seeds(config) -> list[int]:
  """The students' seeds: ``num_seeds`` from ``student.seed`` on."""
  return [config.student.seed + i for i in range(config.student.num_seeds)]


def student_stage(seed: int) -> workdir.Stage:
  """The stage of the student with this seed (``student/seed<seed>``).

  With ``student.eval_points`` > 0 the test split's accuracy is measured
  during training (:func:`curve`), so its fingerprint enters the digest.
  """
  return workdir.Stage(
      f"student/seed{seed}", "train", reads=_reads,
      splits=lambda c: ("test",) if c.student.eval_points else (),
      outputs=("ckpt",), shared=True, check=relabel.trained_checkpoint)


def eval_every(num_steps: int, points: int) -> int:
  """Steps between test evaluations so that ``points`` of them end the run.

  ``ceil(num_steps / points)``: the evaluations fall at its multiples and
  at the last step, at most ``points`` of them (0 when ``points`` is 0).
  """
  return math.ceil(num_steps / points) if points else 0


def curve_split(test: sources.ImageSource,
                images: int) -> sources.ImageSource:
  """The test images a curve is measured on: all, or a fixed subset.

  Args:
    test: the test split.
    images: 0 for all of it; else about this many, the same number from
      every class (at least one, at most the smallest class), drawn once
      with seed 0 so that every student's curve uses the same images.

  Returns:
    ``test``, or the subset in memory.
  """
  if not images:
    return test
  per_class = min(max(1, images // len(test.class_names)),
                  int(np.bincount(test.labels).min()))
  idx = evaluation.random_subset(test.labels, per_class, seed=0)
  return sources.ArraySource(test.read(idx), test.labels[idx],
                             test.class_names)


def curve(art: workdir.Artefact) -> list[tuple[int, float]]:
  """``[(step, test accuracy)]`` of a student trained with eval points.

  The accuracy is on :func:`curve_split`'s images (``student.eval_images``).

  Read from the training's ``metrics.jsonl``; a step logged twice (a run
  resumed from an earlier checkpoint) keeps its last row. Empty when the
  student was trained without ``student.eval_points``.
  """
  path = os.path.join(art.path, CURVE_FILE)
  points = {int(row["step"]): float(row["test_accuracy"])
            for row in workdir.read_jsonl(path) if "test_accuracy" in row}
  return sorted(points.items())


def student(wd: workdir.Workdir, config, seed: int,
            syn_art: workdir.Artefact, teacher_art: workdir.Artefact,
            num_classes: int,
            data: splits.Splits | None = None) -> workdir.Artefact:
  """One student (online KD from the teacher, or hard labels) on the set.

  With ``student.eval_points`` > 0 the student's test accuracy is measured
  at that many evenly spaced steps (the last at the end) on ``data``'s
  test split (or ``student.eval_images`` of it), and kept in the artefact's
  ``metrics.jsonl`` (:func:`curve`).

  Raises:
    ValueError: for eval points without ``data``.
  """
  # In the digest only when on (_reads).
  points, fill = config.student.eval_points, config.student.fill_batch
  if points and data is None:
    raise ValueError("student.eval_points > 0 needs the data splits.")
  # The host's input pipeline: the accuracies are the same whatever it is.
  workers, prefetch = config.input.num_workers, config.input.prefetch

  def make(path, c):
    s = c.student
    teacher = (relabel.load_teacher(teacher_art, num_classes)
               if s.soft_labels else relabel.Classifier(None, None))  # CE
    images, labels, weights = synthetic.load_set(syn_art.path, s.weights)
    if images.shape[1:] != relabel.image_shape(c):
      raise ValueError(f"the synthetic set in {syn_art.path} holds images of "
                       f"shape {images.shape[1:]}, the classifiers take "
                       f"{relabel.image_shape(c)}.")
    num_steps = trainer.steps_from_epochs(
        None if s.num_epochs else s.num_steps, s.num_epochs or None,
        len(images), s.batch_size)
    model = models.build_classifier(s, num_classes)
    eval_fn = None
    if points:
      test = curve_split(data.source("test", relabel.image_shape(c)[0]),
                         s.eval_images)

      def eval_fn(state):
        pred, = evaluation.predict_source(
            [(model, steps.variables_of(state))], test,
            num_workers=workers, prefetch=prefetch)
        return {"test_accuracy": float(np.mean(pred == test.labels))}
    state = trainer.train_student(
        model, images, labels, weights, path,
        num_classes=num_classes, num_steps=num_steps,
        batch_size=s.batch_size, optimizer=s.optimizer,
        learning_rate=s.learning_rate, weight_decay=s.weight_decay,
        decay_norm_and_bias=s.decay_norm_and_bias,
        grad_accumulation=s.grad_accumulation, factor=c.factor,
        fill_batch=fill,
        warmup_steps=int(s.warmup_fraction * num_steps),
        teacher=teacher.model, teacher_variables=teacher.variables,
        temperature=s.temperature, aug=steps.aug_from_config(s), seed=seed,
        eval_fn=eval_fn, eval_every=eval_every(num_steps, points),
        progress=wd.progress)
    return {"steps": int(sharding.to_host(state.step))}

  return wd.run(student_stage(seed), config, make,
                upstream=(syn_art, teacher_art))
