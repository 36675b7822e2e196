"""Relabel: the teacher that gives the students their soft labels."""

import os
from typing import Any, NamedTuple

import ml_collections

from pqd_jax import distributed, embedded, models, sharding, workdir
from pqd_jax.data import splits
from pqd_jax.models import from_torch
from pqd_jax.train import loop, steps, trainer

__all__ = ["TEACHER", "Classifier", "image_shape", "load_teacher", "teacher",
           "trained_checkpoint"]

# The classifiers' input: classifier_image_size (0: image_size), channels.
IMAGE = ("image_size", "classifier_image_size", "channels")


def trained_checkpoint(path: str, meta: dict) -> str:
  """A training stage's check: its last checkpoint is the step it ended at.

  ``meta["record"]["steps"]`` is what the training returned; a loaded
  classifier records none and has nothing to check.
  """
  steps_done = meta.get("record", {}).get("steps")
  return loop.checkpoint_problem(path, steps_done) if steps_done else ""


TEACHER = workdir.Stage(
    "teacher", "relabel",
    reads=lambda c: ("teacher",) + IMAGE + embedded.dataset_read(
        c.teacher.checkpoint),
    splits=("train",),
    outputs=lambda c: ("source.json",) if c.teacher.checkpoint else ("ckpt",),
    shared=True, check=trained_checkpoint,
    inputs=lambda c: (_fingerprint(c.teacher.checkpoint, c.dataset),))


def _fingerprint(checkpoint: str, dataset: str) -> str:
  """What the teacher stage loads: a torchvision file, or as embedded's."""
  file = from_torch.checkpoint_file(checkpoint)
  if file is not None:
    return workdir.tree_stats(file)
  return embedded.fingerprint(checkpoint, dataset, "teacher")


def image_shape(c: Any) -> tuple[int, int, int]:
  """``(h, w, c)`` of the classifiers' inputs."""
  size = c.classifier_image_size or c.image_size
  return (size, size, c.channels)


class Classifier(NamedTuple):
  """A trained classifier: its module and its variables."""

  model: Any
  variables: Any


def _checkpoint_advice(path: str) -> str:
  """What to do about an unreadable checkpoint named by the config."""
  return (f"check it, or point --config.teacher.checkpoint (now {path!r}) "
          "at a complete checkpoint")


def load_teacher(art: workdir.Artefact, num_classes: int) -> Classifier:
  """The teacher of a ``teacher`` artefact (or the checkpoint it names).

  The artefact describes itself: its ``stage.json`` holds the teacher
  config it was made with.
  """
  path = os.path.join(art.path, workdir.STAGE_FILE)
  advice = workdir.remake(art.path)
  with workdir.reading(path, advice, also=(TypeError,)):
    c = ml_collections.ConfigDict(workdir.load_json(path, advice)["reads"])
  shape = image_shape(c)
  checkpoint = c.teacher.checkpoint
  file = from_torch.checkpoint_file(checkpoint)
  if file is not None:
    source = workdir.load_json(os.path.join(art.path, "source.json"), advice)
    with workdir.advise(_checkpoint_advice(checkpoint)):
      return Classifier(*from_torch.torchvision_teacher(
          file, source["class_names"]))
  model = models.build_classifier(c.teacher, num_classes)
  if checkpoint == embedded.EMBEDDED:
    variables = embedded.load_teacher_variables(c.dataset, model, shape)
  else:
    with workdir.advise(_checkpoint_advice(checkpoint) if checkpoint
                        else advice):
      variables = trainer.restore_variables(model, checkpoint or art.path,
                                            shape)
  return Classifier(model, variables)


def teacher(wd: workdir.Workdir, config, data: splits.Splits,
            num_classes: int) -> workdir.Artefact:
  """The teacher: trained on the training split, or loaded and checked."""
  # The host's input pipeline: the training is the same whatever it is, so
  # it is read here, outside the stage's view, and no digest covers it.
  workers, prefetch = config.input.num_workers, config.input.prefetch
  class_names = list(data.source("train", None).class_names)

  def make(path, c):
    t, shape = c.teacher, image_shape(c)
    file = from_torch.checkpoint_file(t.checkpoint)
    if file is not None:
      with workdir.advise(_checkpoint_advice(t.checkpoint)):
        from_torch.torchvision_teacher(file, class_names)  # checks it
      if distributed.is_coordinator():
        workdir.write_json(os.path.join(path, "source.json"), {
            "torchvision": os.path.abspath(file),
            "class_names": class_names})
      return None
    model = models.build_classifier(t, num_classes)
    if t.checkpoint == embedded.EMBEDDED:
      embedded.load_teacher_variables(c.dataset, model, shape)
      if distributed.is_coordinator():
        workdir.write_json(os.path.join(path, "source.json"), {
            "embedded": embedded.provenance(c.dataset, "teacher")})
    elif t.checkpoint:
      with workdir.advise(_checkpoint_advice(t.checkpoint)):
        trainer.restore_variables(model, t.checkpoint, shape)
      if distributed.is_coordinator():
        workdir.write_json(os.path.join(path, "source.json"),
                           {"checkpoint": os.path.abspath(t.checkpoint)})
    else:
      state = trainer.train_teacher(
          model, data.source("train", shape[0]), path,
          num_steps=None if t.num_epochs else t.num_steps,
          num_epochs=t.num_epochs or None, batch_size=t.batch_size,
          optimizer=t.optimizer, learning_rate=t.learning_rate,
          weight_decay=t.weight_decay, warmup_steps=t.warmup_steps,
          aug=steps.aug_from_config(t), seed=t.seed, progress=wd.progress,
          num_workers=workers, prefetch=prefetch)
      return {"steps": int(sharding.to_host(state.step))}

  return wd.run(TEACHER, config, make)
