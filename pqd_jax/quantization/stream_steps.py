"""The compiled per-batch steps of :func:`pqd_jax.quantize_stream`.

A batch holds points of a few of the ``C`` classes; each point is assigned to
the nearest of its own class's ``k`` centroids. A step reads and writes only
the centroids of the classes present in the batch, padded to a power of two
of them (:func:`present_classes`) so that few shapes are compiled.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from pqd_jax.quantization import cells
from pqd_jax.quantization import clvq as clvq_lib
from pqd_jax.quantization import frame as frame_lib

__all__ = ["block_rows", "cell_stats", "divisor_at_most", "padded_classes",
           "present_classes", "recount", "rows_of", "sub_size", "update"]

# Per-point centroid gathers are [sub, k, d]: at most this many floats.
_GATHER_ELEMENTS = 1 << 22
# The dense path reads a batch in blocks of rows of at most this many
# entries: 8 MB in float32, so that a block's float32 copy and its matmuls
# stay in a server CPU's last-level cache.
_BLOCK_ELEMENTS = 1 << 21
# Up to this many classes in a batch, distances and cell sums are dense
# matmuls against all of their centroids (the other classes' masked out):
# a class-major stream holds one or two classes per batch, and a matmul
# runs several times faster than a gather of each point's centroids.
DENSE_CLASSES = 8


def cell_stats(cents: jnp.ndarray, frame: frame_lib.ClassFrame,
               x: jnp.ndarray, cls: jnp.ndarray, *,
               sub: int) -> cells.CellStats:
  """Nearest own-class centroid of every point, and the cell sums.

  Everything but ``x`` is in the classes' frame; each point is moved into
  its class's frame as it is read.

  Args:
    cents: ``[C, k, d]`` float32.
    frame: the ``[C]`` classes' frames.
    x: ``[b, d]`` points, ``b`` a multiple of ``sub``.
    cls: ``[b]`` int32 class index, ``C`` on padding.
    sub: points per gather.

  Returns:
    The ``CellStats`` of all classes' cells, flattened: ``sums [C*k, d]``,
    ``counts [C*k]`` int32 and ``sse [C]``.
  """
  num_classes, k, d = cents.shape
  if num_classes <= DENSE_CLASSES:
    return _dense_cell_stats(cents, frame, x, cls)
  c_sq = jnp.sum(cents * cents, axis=-1)  # [C, k]
  xs = x.reshape(-1, sub, d)
  cs = cls.reshape(-1, sub)

  def body(stats: cells.CellStats, chunk):
    xc, cc = chunk
    safe = jnp.minimum(cc, num_classes - 1)
    xc = ((xc.astype(jnp.float32) - frame.shift[safe])
          / frame.scale[safe][:, None])
    dmin, a = cells.nearest(jnp.einsum("sd,skd->sk", xc, cents[safe]),
                            c_sq[safe], axis=1)
    seg = jnp.where(cc < num_classes, cc * k + a, num_classes * k)
    sums = stats.sums + jax.ops.segment_sum(xc, seg, num_classes * k)
    counts = stats.counts + jax.ops.segment_sum(
        jnp.ones_like(seg), seg, num_classes * k)
    err = jnp.maximum(dmin + jnp.sum(xc * xc, axis=-1), 0.0)
    sse = stats.sse + jax.ops.segment_sum(err, cc, num_classes)
    return cells.CellStats(sums, counts, sse), None

  init = cells.CellStats(jnp.zeros((num_classes * k, d), jnp.float32),
                         jnp.zeros((num_classes * k,), jnp.int32),
                         jnp.zeros((num_classes,), jnp.float32))
  out, _ = jax.lax.scan(body, init, (xs, cs))
  return out


def _dense_cell_stats(cents: jnp.ndarray, frame: frame_lib.ClassFrame,
                      x: jnp.ndarray, cls: jnp.ndarray) -> cells.CellStats:
  """:func:`cell_stats` as two matmuls over all ``C·k`` centroids.

  The batch is read in blocks of rows whose float32 copy stays in cache
  (:data:`_BLOCK_ELEMENTS`): one float16 → float32 pass over a whole large
  batch (64 MB at 1024 × 16,384) runs at a fraction of the copy bandwidth.
  """
  num_classes, k, d = cents.shape
  flat = cents.reshape(num_classes * k, d)
  flat_sq = jnp.sum(flat * flat, axis=-1)
  owner = jnp.arange(num_classes * k) // k
  rows = block_rows(x.shape[0], d)

  def block(stats: cells.CellStats, chunk):
    xb, cb = chunk
    # Each row's class scale by a matmul with the rows' one-hot (exact: one
    # nonzero term), several times faster than a gather.
    hot = (cb[:, None] == jnp.arange(num_classes)[None]).astype(jnp.float32)
    scale = hot @ frame.scale
    xc = ((xb.astype(jnp.float32) - rows_of(hot, frame.shift))
          / jnp.where(scale == 0, 1.0, scale)[:, None])
    dmin, a = cells.nearest(xc @ flat.T, flat_sq[None], axis=1,
                            candidates=owner[None] == cb[:, None])
    seg = jnp.where(cb < num_classes, a, num_classes * k)
    onehot = seg[:, None] == jnp.arange(num_classes * k)[None]
    err = jnp.maximum(dmin + jnp.sum(xc * xc, axis=-1), 0.0)
    return cells.CellStats(
        stats.sums + onehot.astype(jnp.float32).T @ xc,
        stats.counts + jnp.sum(onehot, axis=0, dtype=jnp.int32),
        stats.sse + hot.T @ jnp.where(cb < num_classes, err, 0.0)), None

  init = cells.CellStats(jnp.zeros((num_classes * k, d), jnp.float32),
                         jnp.zeros((num_classes * k,), jnp.int32),
                         jnp.zeros((num_classes,), jnp.float32))
  out, _ = jax.lax.scan(block, init, (x.reshape(-1, rows, d),
                                      cls.reshape(-1, rows)))
  return out


def rows_of(hot: jnp.ndarray, table: jnp.ndarray) -> jnp.ndarray:
  """``hot @ table`` for a one-hot ``hot [b, u]``: each row's ``table`` row.

  Exact (one nonzero term per entry, ``table`` finite), and a sum of ``u``
  broadcast products, which XLA fuses into the op that reads the result:
  the ``[b, d]`` rows are never written out, as a matmul's are. For the
  few classes of a dense step (``u <= DENSE_CLASSES``).

  Args:
    hot: ``[b, u]`` float32, one 1 per row (none on padding rows).
    table: ``[u, d]`` float32, finite.

  Returns:
    ``[b, d]`` float32: row ``i`` is ``table[j]`` where ``hot[i, j] = 1``,
    zero where ``hot[i]`` is zero.
  """
  out = hot[:, 0, None] * table[0][None]
  for j in range(1, hot.shape[1]):
    out = out + hot[:, j, None] * table[j][None]
  return out


@functools.partial(jax.jit, donate_argnums=0)
def update(book: clvq_lib.Codebook, frame: frame_lib.ClassFrame,
           present: jnp.ndarray, x: jnp.ndarray,
           local: jnp.ndarray) -> clvq_lib.Codebook:
  """One mini-batch k-means step on the classes ``present`` in the batch.

  Only their centroids are read and written (the rest of the codebook is
  donated and updated in place), so a step costs O(batch + |present|·K·D)
  rather than O(C·K·D).

  Args:
    book: ``[C, k, d]`` centroids and ``[C, k]`` absorbed counts (donated),
      in the classes' frame.
    frame: the ``[C]`` classes' frames.
    present: ``[u]`` distinct class indices: those in the batch, then absent
      ones as padding.
    x: ``[b, d]`` points.
    local: ``[b]`` position of each point's class in ``present``, ``u`` on
      padding rows.

  Returns:
    The updated codebook.
  """
  sub_book = clvq_lib.Codebook(book.centroids[present],
                               book.absorbed[present])
  u, k, d = sub_book.centroids.shape
  stats = cell_stats(sub_book.centroids, _sub_frame(frame, present), x,
                     local, sub=sub_size(x.shape[0], k, d))
  new = clvq_lib.absorb(sub_book, stats.sums.reshape(u, k, d),
                        stats.counts.reshape(u, k))
  # Padding entries of ``present`` are distinct absent classes: they get
  # zero counts and are written back unchanged.
  return clvq_lib.Codebook(book.centroids.at[present].set(new.centroids),
                           book.absorbed.at[present].set(new.absorbed))


@functools.partial(jax.jit, donate_argnums=(0, 1))
def recount(counts: jnp.ndarray, sse: jnp.ndarray, cents: jnp.ndarray,
            frame: frame_lib.ClassFrame, present: jnp.ndarray, x: jnp.ndarray,
            local: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Adds a batch's exact cell counts and squared errors (present classes).

  Args:
    counts: ``[C, k]`` int32 counts so far (donated).
    sse: ``[C]`` float32 summed squared errors so far, in the frames
      (donated).
    cents: ``[C, k, d]`` float32 centroids in the classes' frame.
    frame: the ``[C]`` classes' frames.
    present: ``[u]`` as for :func:`update`.
    x: ``[b, d]`` points.
    local: ``[b]`` as for :func:`update`.

  Returns:
    ``(counts, sse)`` with the batch added.
  """
  sub_cents = cents[present]
  u, k, d = sub_cents.shape
  stats = cell_stats(sub_cents, _sub_frame(frame, present), x, local,
                     sub=sub_size(x.shape[0], k, d))
  return (counts.at[present].add(stats.counts.reshape(u, k)),
          sse.at[present].add(stats.sse))


def _sub_frame(frame: frame_lib.ClassFrame,
               present: jnp.ndarray) -> frame_lib.ClassFrame:
  return frame_lib.ClassFrame(frame.shift[present], frame.scale[present])


def present_classes(cs: np.ndarray,
                    num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """``(present [u], local [b])`` for a batch.

  ``present`` lists the batch's classes (sorted), padded with distinct absent
  classes to ``u`` = :func:`padded_classes` (at most ``num_classes``), so
  few shapes are compiled; ``local`` is each row's position in it (``u`` on
  padding rows).

  Args:
    cs: ``[b]`` int32 class index of each row, ``num_classes`` on padding.
    num_classes: ``C``.

  Returns:
    ``(present, local)``, both int32.
  """
  real = cs[cs < num_classes]
  present = np.unique(real)
  u = min(padded_classes(len(present)), num_classes)
  local = np.searchsorted(present, np.minimum(cs, num_classes - 1))
  local = np.where(cs < num_classes, local, u).astype(np.int32)
  absent = np.setdiff1d(np.arange(num_classes), present)[:u - len(present)]
  return np.concatenate([present, absent]).astype(np.int32), local


def padded_classes(num_present: int) -> int:
  """Classes a step of a batch with ``num_present`` classes is compiled for.

  The next power of two, at least 2: a class-major stream's batches hold
  one or two classes, and both compile to one shape.
  """
  return max(2, 1 << int(np.ceil(np.log2(max(num_present, 1)))))


def sub_size(b: int, k: int, d: int) -> int:
  """Largest divisor of ``b`` with ``sub * k * d <= _GATHER_ELEMENTS``."""
  return divisor_at_most(b, max(1, _GATHER_ELEMENTS // (k * d)))


def block_rows(b: int, d: int) -> int:
  """Rows per block of a ``[b, d]`` batch read block by block.

  The largest divisor of ``b`` whose block has at most
  :data:`_BLOCK_ELEMENTS` entries.
  """
  return divisor_at_most(b, max(1, _BLOCK_ELEMENTS // d))


def divisor_at_most(b: int, cap: int) -> int:
  """Largest divisor of ``b`` that is at most ``cap``."""
  for sub in range(min(b, cap), 0, -1):
    if b % sub == 0:
      return sub
  return 1
