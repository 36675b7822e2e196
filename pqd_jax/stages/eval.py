"""Eval: the students and the teacher on the real test split."""

import os

import numpy as np

from pqd_jax import distributed, models, report, workdir
from pqd_jax.data import splits
from pqd_jax.stages import relabel
from pqd_jax.stages import train as train_stage
from pqd_jax.train import evaluation as evaluation_lib
from pqd_jax.train import trainer

__all__ = ["EVAL", "RESULTS", "evaluate", "results"]

RESULTS = "results.json"
EVAL = workdir.Stage(
    "eval", "eval",
    reads=("dataset", "test_crop", "ipc", "baseline", "quantize.weights",
           "decode.strength",
           "student.weights", "student.arch", "student.width",
           "student.depth", "student.norm", "student.stem") + relabel.IMAGE,
    splits=("test",), outputs=(RESULTS,))


def _sweep_summary(sweep_art: workdir.Artefact, root: str) -> dict:
  s = workdir.read_npz(os.path.join(sweep_art.path, "sweep.npz"),
                       ("ks", "distortion", "dim"),
                       workdir.remake(sweep_art.path))
  ks, dist, dim = s["ks"], s["distortion"], int(s["dim"])
  two = len(ks) >= 2
  return {"ks": ks.tolist(), "mean_distortion": dist.mean(axis=1).tolist(),
          "dim": dim,
          "fitted_slope": report.fitted_slope(ks, dist) if two else None,
          "plot": (os.path.relpath(os.path.join(
              sweep_art.path, "distortion_vs_k.png"), root) if two else None)}


def results(art: workdir.Artefact) -> dict:
  """The results of an ``eval`` artefact."""
  return workdir.read_json(os.path.join(art.path, RESULTS))


def evaluate(wd: workdir.Workdir, config, data: splits.Splits,
             student_arts: list[workdir.Artefact],
             teacher_art: workdir.Artefact, q_art: workdir.Artefact | None,
             sweep_art: workdir.Artefact | None,
             num_classes: int) -> workdir.Artefact:
  """Test accuracy of every student and of the teacher: ``results.json``.

  With ``student.eval_points``, ``curves`` holds each student's test
  accuracy at those steps (its last point is the student's accuracy).

  The results are also appended to the workdir's history (a JSON line).
  """
  # The host's input pipeline: the predictions are the same whatever it is,
  # so it is read here, outside the stage's view, and no digest covers it.
  workers, prefetch = config.input.num_workers, config.input.prefetch

  def make(path, c):
    teacher = relabel.load_teacher(teacher_art, num_classes)
    shape = relabel.image_shape(c)
    test = data.source("test", shape[0])
    model = models.build_classifier(c.student, num_classes)
    classifiers = []
    for art in student_arts:
      with workdir.advise(workdir.remake(art.path)):
        classifiers.append(
            (model, trainer.restore_variables(model, art.path, shape)))
    # The test split read once for every classifier, a batch at a time
    # decoded ahead by grain workers (each process its devices' images).
    *preds, teacher_pred = evaluation_lib.predict_source(
        classifiers + [(teacher.model, teacher.variables)], test,
        num_workers=workers, prefetch=prefetch)
    accs = [float(np.mean(p == test.labels)) for p in preds]
    teacher_acc = float(np.mean(teacher_pred == test.labels))
    distortion = []
    if q_art:
      distortion = workdir.read_npz(
          os.path.join(q_art.path, "quantization.npz"), ("distortion",),
          workdir.remake(q_art.path))["distortion"].tolist()
    mean, std = trainer.mean_std(accs)
    out = {
        "dataset": c.dataset, "ipc": c.ipc,
        "baseline": c.baseline or "distilled",
        "weights": c.quantize.weights, "student_weights": c.student.weights,
        "strength": c.decode.strength, "accuracies": accs,
        "accuracy_mean": mean, "accuracy_std": std,
        "teacher_accuracy": teacher_acc, "distortion": distortion,
        # [(step, test accuracy)] per student (student.eval_points).
        "curves": [train_stage.curve(a) for a in student_arts],
        "sweep": _sweep_summary(sweep_art, wd.root) if sweep_art else {},
        "test_images": len(test)}
    if distributed.is_coordinator():
      workdir.write_json(os.path.join(path, RESULTS), out)
      report.append_history(wd.root, out)

  upstream = [*student_arts, teacher_art, *(a for a in (q_art, sweep_art) if a)]
  return wd.run(EVAL, config, make, upstream=upstream)
