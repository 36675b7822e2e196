"""Readable class names for prompts: ImageNet WordNet ids → words.

tfds's ``imagenet2012`` and ``imagenette`` name their classes by WordNet id
(``n01440764``); a text-conditioned prior needs words (D4M prompts with the
class name). ``pqd_jax/assets/imagenet_class_names.tsv`` maps the 1,000
ImageNet-1k ids, in tfds's label order, to their standard synonym lists
(generated from tfds's ``imagenet2012/labels.txt`` and the class list in
tfds's ``siscore/labels.py``).
"""

import functools
import os
import re
from collections.abc import Sequence

_TSV = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets",
                    "imagenet_class_names.tsv")
_WNID = re.compile(r"^n\d{8}$")


@functools.cache
def imagenet_synonyms() -> dict[str, str]:
  """``{wnid: "tench, Tinca tinca", ...}`` for the 1,000 ImageNet classes."""
  with open(_TSV, encoding="utf-8") as f:
    rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
  return {wnid: names for wnid, names in rows}


SYNONYMS = ("first", "all")


def readable(class_names: Sequence[str],
             synonyms: str = "first") -> tuple[str, ...]:
  """Maps WordNet ids to words; other names are kept.

  Args:
    class_names: dataset class names, e.g. ``("n01440764", "n02102040")``
      or ``("T-shirt/top", ...)``.
    synonyms: ``"first"``: the id's first synonym (``"tench"``);
      ``"all"``: its whole synonym line (``"tench, Tinca tinca"``), D4M's
      prompts.

  Returns:
    ``("tench", "English springer")`` for the ids; unknown ids and ordinary
    names unchanged (underscores of folder names become spaces).

  Raises:
    ValueError: for another ``synonyms``.
  """
  if synonyms not in SYNONYMS:
    raise ValueError(f"synonyms must be one of {SYNONYMS}, got "
                     f"{synonyms!r}.")
  table = imagenet_synonyms()
  out = []
  for name in class_names:
    if _WNID.match(name) and name in table:
      line = table[name]
      out.append(line if synonyms == "all" else line.split(",")[0].strip())
    else:
      out.append(name.replace("_", " "))
  return tuple(out)
