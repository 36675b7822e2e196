"""Atomic writers, tolerant and strict readers of a workdir's files.

Every file is written atomically (a temporary file of this process, then
``os.replace``): a killed run leaves either the old file or the new one,
never half of one. JSON lines are appended in one ``write`` and read back
skipping a line cut by a kill.

The tolerant readers (:func:`read_json`, :func:`readable`) let the stage
cache make a broken artefact again. Everywhere else a file that is cut short
or corrupt raises :class:`UnreadableFileError`, a one-line ``ValueError``
naming the file and what to do (:func:`reading`).
"""

import contextlib
import hashlib
import json
import os
import shutil
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import msgpack
import numpy as np

__all__ = [
    "DAMAGED", "ArrayLayout", "UnreadableFileError", "advise",
    "append_jsonl", "array_layout", "atomic_directory", "load_json",
    "read_json", "read_jsonl", "read_npz", "read_rows", "readable",
    "reading", "remake", "save_atomic", "tree_stats", "write_json",
    "write_npy", "write_npz", "write_text",
]

# What to do about a damaged input file (data, a checkpoint given by path).
DAMAGED = "the file is truncated or corrupt: fetch or copy it again"
# What reading a cut or corrupt file raises (json, numpy, zip, gzip, PIL and
# msgpack errors are among these or subclass them).
_CORRUPT = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile,
            struct.error, zlib.error, msgpack.UnpackException)
# Not about the content: a missing or forbidden file keeps its own error
# (callers say how to get a missing file), and so does a lack of memory.
_NOT_CORRUPT = (FileNotFoundError, PermissionError, IsADirectoryError,
                NotADirectoryError, MemoryError)
_REASON_CHARS = 200


class UnreadableFileError(ValueError):
  """A file that is cut short or corrupt: names it and what to do.

  Attributes:
    path: the file (or checkpoint directory).
    reason: what is wrong with it, one line.
    advice: what to do about it.
  """

  def __init__(self, path: str, reason: str, advice: str):
    super().__init__(f"cannot read {path}: {reason}; {advice}")
    self.path, self.reason, self.advice = path, reason, advice

  def __reduce__(self):  # the message is not the constructor's argument
    return type(self), (self.path, self.reason, self.advice)


def remake(directory: str) -> str:
  """The advice for a damaged pipeline artefact: the cache makes it again."""
  return f"delete {directory} and run again: the stage makes it again"


def _reason(error: BaseException) -> str:
  """``error`` as one short line: its type and first line."""
  lines = str(error).strip().splitlines()
  text = " ".join(lines[0].split()).rstrip(".") if lines else ""
  if len(text) > _REASON_CHARS:
    text = text[:_REASON_CHARS - 3] + "..."
  name = type(error).__name__
  return f"{name}: {text}" if text else name


@contextlib.contextmanager
def reading(path: str, advice: str,
            also: tuple[type[Exception], ...] = ()) -> Iterator[None]:
  """Turns what a cut or corrupt ``path`` raises into one ValueError.

  Raises :class:`UnreadableFileError` (``cannot read <path>: <reason>;
  <advice>``, ``advice`` e.g. :data:`DAMAGED` or :func:`remake`) for an
  OSError, EOFError, ValueError, KeyError, zip, zlib, struct or msgpack
  error, or one of ``also`` (orbax raises bare ``Exception``). A missing or
  forbidden file passes through, as does an :class:`UnreadableFileError` of
  a nested read.
  """
  try:
    yield
  except (UnreadableFileError, *_NOT_CORRUPT):
    raise
  except (*_CORRUPT, *also) as e:
    raise UnreadableFileError(path, _reason(e), advice) from None


@contextlib.contextmanager
def advise(advice: str) -> Iterator[None]:
  """Gives an :class:`UnreadableFileError` raised inside another advice.

  For a caller that knows better what to do than the reader it calls (a
  pipeline stage loading its artefact, a config field naming a checkpoint).
  """
  try:
    yield
  except UnreadableFileError as e:
    raise UnreadableFileError(e.path, e.reason, advice) from None


def load_json(path: str, advice: str = DAMAGED) -> Any:
  """The JSON in ``path``: FileNotFoundError or :func:`reading`'s error."""
  with reading(path, advice), open(path, "rb") as f:
    return json.load(f)


def read_npz(path: str, names: Sequence[str],
             advice: str = DAMAGED) -> dict[str, np.ndarray]:
  """Arrays ``names`` of an ``.npz``: FileNotFoundError or :func:`reading`'s."""
  with reading(path, advice):
    with open(path, "rb") as f:
      if f.read(2) != b"PK":
        # np.load would try it as a pickle and say so.
        raise UnreadableFileError(path, "not an .npz (zip) archive", advice)
    with np.load(path) as archive:
      return {name: archive[name] for name in names}


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


def _npy_header(f: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
  version = np.lib.format.read_magic(f)
  read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                 else np.lib.format.read_array_header_2_0)
  shape, fortran, dtype = read_header(f)
  return tuple(shape), fortran, dtype


def array_layout(path: str, member: str | None = None, *,
                 advice: str = DAMAGED) -> ArrayLayout:
  """The layout of a ``.npy`` file, or of array ``member`` of an ``.npz``.

  The member must be stored uncompressed (``np.savez``, as
  :func:`write_npz` does), so its rows can be read in place.

  Raises:
    UnreadableFileError: for a file that is missing, not such an array,
      cut short, or lacks ``member`` (``advice`` says what to do).
    ValueError: for a compressed member or an array that is not C-ordered
      plain values.
  """
  name = f"array {member!r} of {path}" if member else path
  try:
    with reading(name, advice), open(path, "rb") as f:
      stored = True
      if member is not None:
        with zipfile.ZipFile(f) as z:
          info = z.getinfo(member + ".npy")
        stored = info.compress_type == zipfile.ZIP_STORED
        # The local header: 30 bytes, then the name and the extra field.
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        f.seek(info.header_offset + 30 + name_len + extra_len)
      shape, fortran, dtype = _npy_header(f) if stored else ((), False, None)
      offset = f.tell()
  except FileNotFoundError:  # a shard not written yet, for SetWriter
    raise UnreadableFileError(name, "no such file", advice) from None
  if not stored:
    raise ValueError(f"{path}: {member!r} is compressed; rows are read "
                     "only from np.savez (stored) members.")
  if fortran or dtype.hasobject:
    raise ValueError(f"{path}: rows can be read only from a C-ordered array "
                     "of plain values.")
  size = os.path.getsize(path)
  need = offset + int(np.prod(shape)) * dtype.itemsize
  if need > size:
    raise UnreadableFileError(
        name, f"cut short: {size} bytes, the array needs {need}", advice)
  return ArrayLayout(path, offset, shape, dtype)


def read_rows(layout: ArrayLayout, start: int, stop: int, *,
              advice: str = DAMAGED, out: np.ndarray | None = None
              ) -> np.ndarray:
  """Rows ``[start, stop)`` of an array, read from its file (no mapping).

  Reads with ``pread`` into a new array (or ``out``), so a process that
  reads a large file row by row holds only the rows it asked for (a memory
  map would keep every page it touched resident). A file cut short since
  ``layout`` was taken raises :class:`UnreadableFileError` with ``advice``.

  Args:
    layout: the array's place in its file.
    start: first row.
    stop: row after the last.
    advice: what the error of a damaged file tells the user to do.
    out: a C-contiguous array of the rows' shape and dtype to read into.

  Returns:
    ``[stop - start, ...]`` the rows (``out`` if given).
  """
  n = layout.shape[0]
  if not 0 <= start <= stop <= n:
    raise IndexError(f"rows [{start}, {stop}) are outside [0, {n}) of "
                     f"{layout.path}.")
  row = int(np.prod(layout.shape[1:])) * layout.dtype.itemsize
  shape = (stop - start,) + layout.shape[1:]
  if out is None:
    out = np.empty(shape, layout.dtype)
  elif out.shape != shape or out.dtype != layout.dtype:
    raise ValueError(f"out must be a {layout.dtype} array of shape {shape}, "
                     f"got {out.dtype} {out.shape}.")
  elif not out.flags.c_contiguous or not out.flags.writeable:
    raise ValueError("out must be writeable and C-contiguous (a "
                     f"{'read-only' if not out.flags.writeable else 'strided'}"
                     " array was given).")
  if out.size:
    view = memoryview(out.reshape(-1).view(np.uint8))
    fd = os.open(layout.path, os.O_RDONLY)
    try:
      got = 0
      while got < len(view):
        k = os.preadv(fd, [view[got:]], layout.offset + start * row + got)
        if k == 0:
          raise UnreadableFileError(
              layout.path, f"cut short at row {start + got // row}", advice)
        got += k
    finally:
      os.close(fd)
  return out
