"""Atomic writers and tolerant readers of a workdir's files.

Every file is written atomically (a temporary file of this process, then
``os.replace``): a killed run leaves either the old file or the new one,
never half of one. JSON lines are appended in one ``write`` and read back
skipping a line cut by a kill.
"""

import contextlib
import hashlib
import json
import os
import shutil
import struct
import zipfile
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "ArrayLayout", "append_jsonl", "array_layout", "atomic_directory",
    "read_json", "read_jsonl", "read_rows", "readable", "save_atomic",
    "tree_stats", "write_json", "write_npy", "write_npz", "write_text",
]


def _tmp(path: str) -> str:
  """A temporary name beside ``path``, unique to this process."""
  root, ext = os.path.splitext(path)
  return f"{root}.tmp{os.getpid()}{ext}"


def write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` as JSON to a temporary file and renames it to ``path``."""
  tmp = _tmp(path)
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` atomically."""
  tmp = _tmp(path)
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def write_npz(path: str, **arrays: Any) -> None:
  """``np.savez`` to ``path`` atomically (``path`` ends in ``.npz``)."""
  tmp = _tmp(path)
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def write_npy(path: str, array: Any) -> None:
  """``np.save`` to ``path`` atomically (``path`` ends in ``.npy``)."""
  save_atomic(path, lambda tmp: np.save(tmp, array))


def save_atomic(path: str, save: Callable[[str], None]) -> None:
  """Calls ``save(tmp)`` (e.g. ``image.save``, ``fig.savefig``) and renames.

  The temporary name keeps ``path``'s extension, which image writers use to
  pick the format.
  """
  tmp = _tmp(path)
  save(tmp)
  os.replace(tmp, path)


def append_jsonl(path: str, row: dict) -> None:
  """Appends ``row`` as one JSON line in one ``write``.

  Processes may share the file: one ``write`` of a whole line with
  ``O_APPEND`` does not interleave. A last line cut by a kill gets its
  newline first, so this row stays whole (:func:`read_jsonl` skips the cut
  one).
  """
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  data = (json.dumps(row) + "\n").encode()
  fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
      data = b"\n" + data
    os.write(fd, data)
  finally:
    os.close(fd)


def read_jsonl(path: str) -> list[dict]:
  """The JSON-object lines of ``path`` (none if it does not exist).

  A line cut by a kill, or one that is not a JSON object, is skipped.
  """
  rows = []
  if os.path.exists(path):
    with open(path, errors="replace") as f:
      for line in f:
        try:
          row = json.loads(line)
        except json.JSONDecodeError:
          continue
        if isinstance(row, dict):
          rows.append(row)
  return rows


def read_json(path: str) -> Any:
  """The JSON in ``path``, or None when it is missing or unreadable."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


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


def readable(path: str) -> bool:
  """Whether an output file or directory is there and reads back.

  ``.npz``: a zip whose directory lists its members (a truncated file has
  none; the members are not decompressed, so this stays cheap for sets of
  many GB); ``.npy``: its header and as many bytes as it announces;
  ``.json``: parses; a directory: exists and is not empty; anything else:
  exists.
  """
  if path.endswith(os.sep) or os.path.isdir(path):
    return os.path.isdir(path) and bool(os.listdir(path))
  if not os.path.isfile(path):
    return False
  try:
    if path.endswith(".npz"):
      with zipfile.ZipFile(path) as z:
        return bool(z.namelist())
    if path.endswith(".npy"):
      np.load(path, mmap_mode="r")
      return True
  except (OSError, ValueError, zipfile.BadZipFile, EOFError):
    return False
  if path.endswith(".json"):
    return read_json(path) is not None
  return True


def tree_stats(path: str) -> str:
  """A hash of the names, sizes and times of the files under ``path``.

  ``""`` for a path that is not on this filesystem (a hub id, a URL): what
  such a name refers to is pinned by the config (e.g. a revision).
  """
  if not os.path.exists(path):
    return ""
  h = hashlib.sha256()
  for root, dirs, files in os.walk(path):
    dirs.sort()
    for name in sorted(files):
      full = os.path.join(root, name)
      st = os.stat(full)
      h.update(f"{os.path.relpath(full, path)}:{st.st_size}:"
               f"{st.st_mtime_ns}\n".encode())
  if os.path.isfile(path):
    st = os.stat(path)
    h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
  return h.hexdigest()[:16]


class ArrayLayout(NamedTuple):
  """Where an array's rows sit in a file: read with :func:`read_rows`.

  Attributes:
    path: the ``.npy`` file, or the ``.npz`` holding the array.
    offset: byte offset of row 0.
    shape: the array's shape ``[n, ...]``.
    dtype: its dtype.
  """
  path: str
  offset: int
  shape: tuple[int, ...]
  dtype: np.dtype


def _npy_header(f: Any, path: str) -> tuple[tuple[int, ...], np.dtype]:
  version = np.lib.format.read_magic(f)
  read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                 else np.lib.format.read_array_header_2_0)
  shape, fortran, dtype = read_header(f)
  if fortran or dtype.hasobject:
    raise ValueError(f"{path}: rows can be read only from a C-ordered array "
                     "of plain values.")
  return tuple(shape), dtype


def array_layout(path: str, member: str | None = None) -> ArrayLayout:
  """The layout of a ``.npy`` file, or of array ``member`` of an ``.npz``.

  The member must be stored uncompressed (``np.savez``, as
  :func:`write_npz` does), so its rows can be read in place.

  Raises:
    ValueError: for a file that is not such an array, is cut short, or
      lacks ``member``, naming the file.
  """
  try:
    with open(path, "rb") as f:
      if member is not None:
        with zipfile.ZipFile(f) as z:
          info = z.getinfo(member + ".npy")
        if info.compress_type != zipfile.ZIP_STORED:
          raise ValueError(f"{path}: {member!r} is compressed; rows are read "
                           "only from np.savez (stored) members.")
        # The local header: 30 bytes, then the name and the extra field.
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        f.seek(info.header_offset + 30 + name_len + extra_len)
      shape, dtype = _npy_header(f, path)
      offset = f.tell()
  except (KeyError, OSError, EOFError, zipfile.BadZipFile,
          struct.error) as e:
    what = f"array {member!r} of " if member else ""
    raise ValueError(f"cannot read {what}{path}: {e}") from None
  size = os.path.getsize(path)
  need = offset + int(np.prod(shape)) * dtype.itemsize
  if need > size:
    raise ValueError(f"{path} is cut short: {size} bytes, the array needs "
                     f"{need}.")
  return ArrayLayout(path, offset, shape, dtype)


def read_rows(layout: ArrayLayout, start: int, stop: int) -> np.ndarray:
  """Rows ``[start, stop)`` of an array, read from its file (no mapping).

  Reads with ``pread`` into a new array, so a process that reads a large
  file row by row holds only the rows it asked for (a memory map would
  keep every page it touched resident).
  """
  n = layout.shape[0]
  if not 0 <= start <= stop <= n:
    raise IndexError(f"rows [{start}, {stop}) are outside [0, {n}) of "
                     f"{layout.path}.")
  row = int(np.prod(layout.shape[1:])) * layout.dtype.itemsize
  out = np.empty((stop - start,) + layout.shape[1:], layout.dtype)
  if out.size:
    view = memoryview(out.reshape(-1).view(np.uint8))
    fd = os.open(layout.path, os.O_RDONLY)
    try:
      got = 0
      while got < len(view):
        k = os.preadv(fd, [view[got:]], layout.offset + start * row + got)
        if k == 0:
          raise ValueError(f"{layout.path} is cut short at row "
                           f"{start + got // row}.")
        got += k
    finally:
      os.close(fd)
  return out
