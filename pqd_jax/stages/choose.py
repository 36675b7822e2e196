"""Choosing one image per centroid among its candidates.

A centroid's candidates are the real images nearest it
(``decode.images = "nearest"``) or several img2img samples of it with
different noise (``"decoded"``); ``decode.candidates`` says how many. The
set keeps one per centroid, by ``decode.choose``:

- ``"teacher"``: the candidate the teacher finds most typical of its class,
  the highest ``log p(class | image)`` (RDED's realism: the lowest
  cross-entropy);
- ``"spread"``: the candidate farthest from its class's mean in the latent
  space, so the set spreads as its class does (a centroid is a cell's mean
  and sits closer to the class mean than the cell's images).

Ties go to the first candidate (the nearest image, or the sample with the
set's own noise), so one candidate is the set without a choice.
"""

from typing import Any

import numpy as np

from pqd_jax.data import pipeline as data_pipeline
from pqd_jax.train import steps

__all__ = ["CHOICES", "best", "spread_scores", "teacher_scores"]

CHOICES = ("teacher", "spread")


def teacher_scores(teacher: Any, images: np.ndarray, labels: np.ndarray,
                   size: int) -> np.ndarray:
  """``[n]`` the teacher's ``log p(label | image)`` of each candidate.

  Args:
    teacher: a classifier (``model``, ``variables``), e.g.
      :class:`pqd_jax.stages.relabel.Classifier`.
    images: ``[n, h, w, c]`` uint8, or float in ``[-1, 1]``.
    labels: ``[n]`` their classes.
    size: the teacher's input side; other sizes are resized to it (a tile
      of a mosaic is seen upsampled, as the student sees it).
  """
  images = np.asarray(images)
  if images.dtype == np.uint8:
    images = data_pipeline.to_unit_range(images)
  if images.shape[1] != size:
    images = data_pipeline.resize_images(images.astype(np.float32), size)
  return steps.label_log_probs(teacher.model, teacher.variables, images,
                               labels)


def spread_scores(latents: np.ndarray, mean: np.ndarray) -> np.ndarray:
  """``[n]`` squared distance of each candidate's latent to the class mean."""
  x = np.asarray(latents, np.float64).reshape(len(latents), -1)
  return np.sum((x - np.asarray(mean, np.float64).reshape(1, -1)) ** 2, 1)


def best(scores: np.ndarray) -> np.ndarray:
  """``[k]`` the best of each centroid's candidates ``scores [k, m]``.

  The highest score; ties go to the lowest index.
  """
  return np.argmax(np.asarray(scores), axis=1)
