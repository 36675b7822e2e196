"""Train: students from scratch on the weighted synthetic set."""

from pqd_jax import models, sharding, workdir
from pqd_jax.data import synthetic
from pqd_jax.stages import relabel
from pqd_jax.train import steps, trainer

__all__ = ["STUDENT_READS", "student", "student_stage"]

# Every student field but ``num_seeds``: a student's seed does not depend on
# how many there are, so a 3-seed run reuses a 1-seed run's seed 0.
STUDENT_READS = tuple(f"student.{f}" for f in (
    "arch", "width", "depth", "norm", "stem", "weights", "soft_labels",
    "temperature", "num_steps", "num_epochs", "batch_size", "optimizer",
    "learning_rate", "weight_decay", "decay_norm_and_bias", "warmup_fraction",
    "grad_accumulation", "flip", "crop_scale", "dsa", "cutmix")
) + relabel.IMAGE + ("factor",)


def student_stage(seed: int) -> workdir.Stage:
  """The stage of the student with this seed (``student/seed<seed>``)."""
  return workdir.Stage(f"student/seed{seed}", "train", reads=STUDENT_READS,
                       outputs=("ckpt",), shared=True,
                       check=relabel.trained_checkpoint)


def student(wd: workdir.Workdir, config, seed: int,
            syn_art: workdir.Artefact, teacher_art: workdir.Artefact,
            num_classes: int) -> workdir.Artefact:
  """One student (online KD from the teacher, or hard labels) on the set."""

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
    state = trainer.train_student(
        models.build_classifier(s, num_classes), images, labels, weights, path,
        num_classes=num_classes, num_steps=num_steps,
        batch_size=s.batch_size, optimizer=s.optimizer,
        learning_rate=s.learning_rate, weight_decay=s.weight_decay,
        decay_norm_and_bias=s.decay_norm_and_bias,
        grad_accumulation=s.grad_accumulation, factor=c.factor,
        warmup_steps=int(s.warmup_fraction * num_steps),
        teacher=teacher.model, teacher_variables=teacher.variables,
        temperature=s.temperature, aug=steps.aug_from_config(s), seed=seed,
        progress=wd.progress)
    return {"steps": int(sharding.to_host(state.step))}

  return wd.run(student_stage(seed), config, make,
                upstream=(syn_art, teacher_art))
