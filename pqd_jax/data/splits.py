"""A config's data: the train and test splits the pipeline reads.

:class:`Splits` opens each split once per image size and gives each a
fingerprint (:meth:`pqd_jax.data.sources.ImageSource.fingerprint` with the
split's name and channels), which the stages' digests include.
"""

import hashlib
from typing import Any

import numpy as np

from pqd_jax.data.sources import ImageSource, open_source

__all__ = ["Splits", "open_split"]


class Splits:
  """A config's data: its train and test splits, each opened once per size.

  Args:
    config: a pipeline config: ``dataset``, ``data_dir``, ``train_split``,
      ``test_split``, ``image_size`` and ``channels``.
    label_cache: where tfds sources keep their scanned labels.
  """

  def __init__(self, config: Any, label_cache: str | None = None):
    self.dataset = config.dataset
    self.data_dir = config.data_dir or None
    self.names = {"train": config.train_split, "test": config.test_split}
    self.image_size = config.image_size
    self.channels = config.channels
    # How the test images reach their size: squashed (0) or the short side
    # resized and centre-cropped (SRe2L's 0.875: 256 -> 224).
    self.test_crop = config.get("test_crop", 0.0)
    self.label_cache = label_cache
    self._sources: dict[tuple[str, int], ImageSource] = {}
    self._fingerprints: dict[str, str] = {}

  def source(self, split: str, image_size: int | None = None) -> ImageSource:
    """``"train"`` or ``"test"`` at ``image_size`` (default the config's).

    Raises:
      ValueError: for another ``split``.
    """
    if split not in self.names:
      raise ValueError(f"split {split!r} is not 'train' or 'test'.")
    size = image_size or self.image_size
    if (split, size) not in self._sources:
      self._sources[split, size] = open_source(
          self.dataset, self.names[split], data_dir=self.data_dir,
          image_size=size, channels=self.channels,
          label_cache=self.label_cache,
          crop=self.test_crop if split == "test" else 0.0)
    return self._sources[split, size]

  def check(self, ipc: int, factor: int = 1) -> None:
    """Checks what a run needs of its splits before any stage runs.

    Both splits open, hold the same class names in the same label order
    (a test split is compared by name: labels are positions in each split's
    class list, so another set of classes would score predictions against
    other classes), no training class is empty, and every training class
    holds at least ``ipc · factor²`` images (parameterised storage keeps
    ``factor²`` images in each of the ``ipc`` slots).

    Raises:
      ValueError: naming the split, the classes and what to do.
      FileNotFoundError: for a split that is not there (from the source).
    """
    train, test = self.source("train"), self.source("test")
    names, test_names = tuple(train.class_names), tuple(test.class_names)
    where = f"{self.dataset}: the {self.names['test']!r} split"
    if names != test_names:
      missing = [n for n in names if n not in set(test_names)]
      extra = [n for n in test_names if n not in set(names)]
      if not missing and not extra:
        raise ValueError(f"{where} lists the same classes as "
                         f"{self.names['train']!r} in another label order.")
      raise ValueError(
          f"{where} has other classes than {self.names['train']!r}: "
          f"missing {_few(missing)}, extra {_few(extra)}; both splits must "
          "hold the same classes.")
    counts = np.bincount(np.asarray(train.labels, np.int64),
                         minlength=len(names))
    empty = [names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
      raise ValueError(f"{self.dataset}: training classes {_few(empty)} have "
                       "no images; remove them or add images.")
    smallest = int(np.argmin(counts))
    per = factor * factor
    if ipc * per > counts[smallest]:
      needs = f"ipc={ipc}" + (f" x {per} images per slot (factor={factor})"
                              if per > 1 else "")
      raise ValueError(
          f"{needs} is more than the {counts[smallest]} training images of "
          f"class {names[smallest]!r}: use --config.ipc="
          f"{counts[smallest] // per} or fewer.")

  def fingerprint(self, split: str) -> str:
    """The split's identity: its name, channels and records.

    Not where it is stored: a copy of an image folder (with its files'
    times, as ``cp -p`` or ``shutil.copytree`` keep them) has the same
    fingerprint.
    """
    if split not in self._fingerprints:
      self._fingerprints[split] = hashlib.sha256(repr((
          self.names[split], self.channels,
          self.source(split).fingerprint())).encode()).hexdigest()[:16]
    return self._fingerprints[split]


def _few(names: list[str], shown: int = 5) -> str:
  """A list of names for a message, cut after ``shown``."""
  more = f" and {len(names) - shown} more" if len(names) > shown else ""
  return f"{names[:shown]}{more}"


def open_split(config: Any, split: str,
               image_size: int | None = None) -> ImageSource:
  """The config's ``"train"`` or ``"test"`` split, as the pipeline reads it.

  Args:
    config: a pipeline config (its dataset, splits, data_dir, image_size
      and channels).
    split: ``"train"`` or ``"test"``.
    image_size: instead of ``config.image_size``.

  Raises:
    ValueError: for another ``split``.
  """
  return Splits(config).source(split, image_size)
