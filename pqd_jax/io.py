"""Atomic writes: an artefact is either complete or absent, never half-done."""

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from typing import Any

__all__ = ["atomic_directory", "write_json_atomic"]


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes ``obj`` as JSON to a temporary file and renames it to ``path``."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
  """Yields a temporary directory that replaces ``path`` on success.

  On an exception (or a kill) ``path`` keeps its previous content, if any,
  and the temporary directory is removed (or left with a ``.tmp`` suffix
  for the next call to clear).
  """
  path = os.path.abspath(path)
  tmp = path + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    yield tmp
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  old = path + ".old"
  shutil.rmtree(old, ignore_errors=True)
  if os.path.exists(path):
    os.replace(path, old)
  os.replace(tmp, path)
  shutil.rmtree(old, ignore_errors=True)
