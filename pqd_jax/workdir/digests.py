"""Digests of what a stage reads, and the view that keeps it honest."""

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["ConfigView", "UndeclaredConfigRead", "config_values", "digest",
           "to_jsonable"]


def to_jsonable(value: Any) -> Any:
  """A config (``ConfigDict``), dict, tuple or scalar as plain JSON values."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, dict):
    return {str(k): to_jsonable(v) for k, v in sorted(value.items())}
  if isinstance(value, tuple | list):
    return [to_jsonable(v) for v in value]
  if isinstance(value, np.generic):
    return value.item()
  return value


def digest(*parts: Any) -> str:
  """A short stable hash of JSON-able parts (configs, digests, strings)."""
  text = json.dumps(to_jsonable(list(parts)), sort_keys=True)
  return hashlib.sha256(text.encode()).hexdigest()[:12]


class UndeclaredConfigRead(KeyError):
  """A stage read a config path that its :class:`Stage` does not declare."""


class ConfigView:
  """A read-only view of a config that lets through only declared paths.

  ``view.quantize.ipc`` works when ``"quantize"`` or ``"quantize.ipc"`` is
  declared; reading any other path raises :class:`UndeclaredConfigRead`
  naming it, so a stage cannot depend on a field its digest does not cover.
  A declared section is returned as the config's own section.

  Args:
    config: the run's config (``ConfigDict`` or nested dicts).
    paths: the declared dotted paths.
    owner: who reads (for the error message).
    prefix: the path of ``config`` inside the root config.
  """

  def __init__(self, config: Any, paths: Sequence[str], owner: str = "",
               prefix: str = ""):
    object.__setattr__(self, "_config", config)
    object.__setattr__(self, "_paths", tuple(paths))
    object.__setattr__(self, "_owner", owner)
    object.__setattr__(self, "_prefix", prefix)

  def _path(self, name: str) -> str:
    return f"{self._prefix}{name}"

  def __getitem__(self, name: str) -> Any:
    path = self._path(name)
    if any(path == p or path.startswith(p + ".") for p in self._paths):
      return self._config[name]
    if any(p.startswith(path + ".") for p in self._paths):
      return ConfigView(self._config[name], self._paths, self._owner,
                        path + ".")
    raise UndeclaredConfigRead(
        f"{self._owner or 'this stage'} reads config.{path}, which it does "
        f"not declare (declared: {', '.join(self._paths) or 'none'}); add it "
        "to the stage's reads so that its digest covers it.")

  def __getattr__(self, name: str) -> Any:
    if name.startswith("__"):
      raise AttributeError(name)
    return self[name]

  def get(self, name: str, default: Any = None) -> Any:
    """``self[name]``, or ``default`` when the config has no such field."""
    try:
      return self[name]
    except UndeclaredConfigRead:
      raise
    except (KeyError, AttributeError):
      return default

  def __setattr__(self, name: str, value: Any) -> None:
    raise AttributeError("a stage's config view is read-only.")


def config_values(config: Any, paths: Sequence[str]) -> dict[str, Any]:
  """``{path: value}`` for each declared dotted path of ``config``."""
  out = {}
  for path in paths:
    value = config
    for part in path.split("."):
      value = value[part]
    out[path] = to_jsonable(value)
  return out
