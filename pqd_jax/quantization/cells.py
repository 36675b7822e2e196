"""Voronoi cells: the assignment kernels shared by Lloyd, CLVQ and streaming.

Every function here works on the *local* shard of one class's points and
reduces across the mesh axis ``axis_name`` with ``psum``, so the same code runs
on one device and on a pod. Shapes use ``n`` for the local number of points
(padding included), ``d`` for the flattened latent size and ``k`` for the
number of centroids. Padding rows carry ``mask == False`` and never count.

Assignments use ``‖x‖² − 2 x·c + ‖c‖²`` with the distances laid out as
``[k, chunk]`` (XLA's CPU dot is fastest with the long axis last), or
``[chunk, k]`` for at most :data:`POINTS_MAJOR_K` centroids (a thin
codebook's product runs faster that way round); the nearest centroid is
:func:`nearest`: on ``[k, chunk]`` a running minimum over the products in
one fused pass, several times faster than column reductions of the
distances and far faster than XLA's variadic ``argmin``. The cell sums
are a one-hot matmul, not a scatter: on CPU the scatter of
``segment_sum`` is 3–6× slower. Once few points change cell between
passes, :func:`moved_sums` updates the sums and counts from the moved
points alone.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "CellStats",
    "all_gather",
    "assign_cells",
    "assign_stats",
    "chunk_points",
    "compact",
    "moved_sums",
    "nearest",
]


# Up to this many centroids, distances are laid out [points, k].
POINTS_MAJOR_K = 32
# Centroids per unrolled step of the running minimum of :func:`nearest`.
NEAREST_GROUP = 32
# Entries per row of the blocked prefix sum of :func:`compact`.
COMPACT_WIDTH = 128


class CellStats(NamedTuple):
  """Sufficient statistics of a Voronoi partition, summed over all devices.

  Also the carry of the assignment scans, which sum them chunk by chunk.

  Attributes:
    sums: ``[k, d]`` float32 sum of the points in each cell (None when not
      computed).
    counts: ``[k]`` int32 number of points in each cell (None when not
      computed).
    sse: scalar float32 sum of squared distances to the nearest centroid.
  """

  sums: jnp.ndarray
  counts: jnp.ndarray
  sse: jnp.ndarray


def chunk_points(x: jnp.ndarray, chunk: int) -> jnp.ndarray:
  """Reshapes ``[n, ...]`` into ``[n // chunk, chunk, ...]``."""
  return x.reshape((x.shape[0] // chunk, chunk) + x.shape[1:])


def nearest(products: jnp.ndarray, c_sq: jnp.ndarray, axis: int, *,
            candidates: jnp.ndarray | None = None,
            loop: bool = True) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Each point's nearest centroid from the products ``x·c`` and ``‖c‖²``.

  The minimum over centroids ``j`` of ``c_sq[j] − 2 products[j]`` (the
  squared distance less ``‖x‖²``) and the smallest ``j`` attaining it; ties
  go to the first index, as ``argmin``. Distances must not be NaN (the
  callers' points and centroids are finite).

  With the centroids on the minor axis (``[m, k]``), two row reductions of
  the distances: the minimum, then the first index that reaches it. With
  them on the major axis (``[k, m]``), whose column reductions XLA:CPU runs
  several times slower, a running minimum over the centroids, which XLA
  fuses into one pass over the points that writes no ``[k, m]``
  temporary: a loop of at least two steps, each over up to
  :data:`NEAREST_GROUP` centroids unrolled, whose results XLA keeps in
  memory (the last step may revisit centroids, which changes nothing).

  Args:
    products: ``[k, m]`` (``axis=0``) or ``[m, k]`` (``axis=1``) float32
      products of centroids and points.
    c_sq: the centroids' squared norms, of ``products``' rank and
      broadcastable to it (``[k, 1]`` or ``[1, k]``; ``[m, k]`` for each
      point's own centroids).
    axis: the centroid axis of ``products``.
    candidates: bool, of ``products``' rank and broadcastable to it: the
      centroids each point may take (its distance to the others counts as
      ``inf``); None: all.
    loop: False unrolls the whole running minimum, on either layout (fewer
      than ``2 * NEAREST_GROUP`` centroids), which XLA then fuses into each
      consumer of the results: faster when every consumer reads a point's
      result once (elementwise), but a consumer that reads it once per
      centroid (a one-hot of the cells) would recompute the minimum for
      every centroid.

  Returns:
    ``(dmin, first)``: ``products``' shape without ``axis``; ``dmin`` the
    smallest distance less ``‖x‖²``, ``first`` int32 its first centroid.

  Raises:
    ValueError: if ``c_sq`` or ``candidates`` is not of ``products``' rank
      (a ``[k]`` vector would broadcast along the wrong axis), or
      ``loop=False`` with ``2 * NEAREST_GROUP`` centroids or more.
  """
  k = products.shape[axis]
  for name, value in (("c_sq", c_sq), ("candidates", candidates)):
    if value is not None and jnp.ndim(value) != products.ndim:
      raise ValueError(
          f"nearest: {name} of shape {jnp.shape(value)} must have the rank "
          f"of products {products.shape} (e.g. [k, 1] or [1, k]).")
  c_sq = jnp.asarray(c_sq, products.dtype)

  def distance(prod, norm, allowed):
    dist = norm - 2.0 * prod
    return dist if allowed is None else jnp.where(allowed, dist, jnp.inf)

  if loop and axis == products.ndim - 1:
    dist = distance(products, c_sq, candidates)
    dmin = jnp.min(dist, axis=axis)
    iota = jax.lax.broadcasted_iota(jnp.int32, dist.shape, axis)
    first = jnp.min(jnp.where(dist == jnp.expand_dims(dmin, axis), iota, k),
                    axis=axis)
    return dmin, first
  if loop:
    steps = max(2, -(-k // NEAREST_GROUP))
    size = -(-k // steps)
  elif k < 2 * NEAREST_GROUP:
    steps, size = 1, k
  else:
    raise ValueError(f"nearest(loop=False) unrolls fewer than "
                     f"{2 * NEAREST_GROUP} centroids, got {k}.")

  def rows(a, start):
    if a is None or a.shape[axis] == 1:
      return a
    return jax.lax.dynamic_slice_in_dim(a, start, size, axis)

  def row(a, j):
    if a is None:
      return None
    return jax.lax.index_in_dim(a, j if a.shape[axis] > 1 else 0, axis,
                                keepdims=False)

  def step(i, carry):
    best, first = carry
    start = jnp.minimum(i * size, k - size)
    prod, norm, allowed = (rows(products, start), rows(c_sq, start),
                           rows(candidates, start))
    for j in range(size):
      dist = distance(row(prod, j), row(norm, j), row(allowed, j))
      better = dist < best
      best = jnp.where(better, dist, best)
      first = jnp.where(better, start + j, first)
    return best, first

  # From centroid 0 (typed, on a mesh, as the products and norms are).
  best = distance(row(products, 0), row(c_sq, 0), row(candidates, 0))
  init = (best, jnp.zeros_like(best, jnp.int32))
  if not loop:
    return step(0, init)
  return jax.lax.fori_loop(0, steps, step, init)


def assign_cells(
    x: jnp.ndarray,
    x_sq: jnp.ndarray,
    mask: jnp.ndarray,
    centroids: jnp.ndarray,
    *,
    axis_name: str,
    sums: bool = True,
    counts: bool = True,
) -> tuple[CellStats, jnp.ndarray, jnp.ndarray]:
  """Assigns every point to its nearest centroid; counts and sums the cells.

  Memory is O(chunk·k): the chunks are visited by ``lax.scan``.

  Args:
    x: ``[n_chunks, chunk, d]`` local points.
    x_sq: ``[n_chunks, chunk]`` float32 squared norms of ``x``.
    mask: ``[n_chunks, chunk]`` bool, False on padding.
    centroids: ``[k, d]`` float32.
    axis_name: mesh axis to sum over.
    sums: whether to sum the points of each cell (a one-hot matmul as costly
      as the distances); without, ``stats.sums`` is None.
    counts: whether to count the points of each cell (a pass over a
      ``[k, chunk]`` one-hot); without, ``stats.counts`` is None.

  Returns:
    ``(stats, dist, cell)``: the global ``CellStats``; this device's
    ``[n_chunks, chunk]`` squared distance of each point to its nearest
    centroid (0 on padding) and int32 index of that centroid (``k`` on
    padding).
  """
  k, d = centroids.shape
  c_sq = jnp.sum(centroids * centroids, axis=-1)
  axis = 1 if k <= POINTS_MAJOR_K else 0  # the centroid axis of distances

  def body(stats: CellStats, chunk):
    xc, xc_sq, valid = chunk
    xf = xc.astype(jnp.float32)
    if axis:
      prod, norms = xf @ centroids.T, c_sq[None, :]  # [m, k]
    else:
      prod, norms = centroids @ xf.T, c_sq[:, None]  # [k, m]
    # Without sums and counts, the results are read only point by point.
    dmin, first = nearest(prod, norms, axis=axis,
                          loop=sums or counts or k >= 2 * NEAREST_GROUP)
    cell = jnp.where(valid, first, k)  # padding's k matches no centroid
    cell_sums, cell_counts = stats.sums, stats.counts
    if sums or counts:
      iota = jax.lax.broadcasted_iota(jnp.int32, prod.shape, axis)
      one_hot = iota == jnp.expand_dims(cell, axis)
    if sums:
      hot = one_hot.astype(jnp.float32)
      cell_sums = cell_sums + (hot.T @ xf if axis else hot @ xf)
    if counts:
      cell_counts = cell_counts + jnp.sum(one_hot, axis=1 - axis,
                                          dtype=jnp.int32)
    dist = jnp.where(valid, jnp.maximum(dmin + xc_sq, 0.0), 0.0)
    return (CellStats(cell_sums, cell_counts, stats.sse + jnp.sum(dist)),
            (dist, cell))

  init = jax.lax.pcast(CellStats(
      sums=jnp.zeros((k, d), jnp.float32) if sums else None,
      counts=jnp.zeros((k,), jnp.int32) if counts else None,
      sse=jnp.zeros((), jnp.float32),
  ), axis_name, to="varying")
  if x.shape[0] == 1:  # one chunk: no loop (a length-1 scan costs copies)
    stats, (dist, cell) = body(init, (x[0], x_sq[0], mask[0]))
    dist, cell = dist[None], cell[None]
  else:
    stats, (dist, cell) = jax.lax.scan(body, init, (x, x_sq, mask))
  return jax.lax.psum(stats, axis_name), dist, cell


def assign_stats(
    x: jnp.ndarray,
    x_sq: jnp.ndarray,
    mask: jnp.ndarray,
    centroids: jnp.ndarray,
    *,
    axis_name: str,
) -> tuple[CellStats, jnp.ndarray]:
  """:func:`assign_cells` with the cell sums, without the cell indices.

  Returns:
    ``(stats, dist)``: the global ``CellStats`` and this device's
    ``[n_chunks, chunk]`` squared distance of each point to its nearest
    centroid (0 on padding).
  """
  stats, dist, _ = assign_cells(x, x_sq, mask, centroids,
                                axis_name=axis_name)
  return stats, dist


def moved_sums(x: jnp.ndarray, cell: jnp.ndarray, previous: jnp.ndarray,
               k: int, *, block: int,
               axis_name: str) -> tuple[jnp.ndarray, jnp.ndarray]:
  """How the cell sums and counts change when points move to ``cell``.

  Only the moved points are read: their indices are compacted and gathered
  ``block`` at a time, each block adding its points to their new cell and
  subtracting them from their old one (a ``[k, block]`` signed one-hot
  matmul). A pass where few points move thus costs a fraction of the full
  ``[k, n]`` one-hot matmul of :func:`assign_cells`; its cost grows with
  the number that move.

  Args:
    x: ``[n_chunks, chunk, d]`` local points.
    cell: ``[n_chunks, chunk]`` int32 new cell of each point (``k`` on
      padding).
    previous: ``[n_chunks, chunk]`` int32 previous cell (``k`` on padding).
    k: number of cells.
    block: moved points gathered at a time.
    axis_name: mesh axis to sum over.

  Returns:
    ``(sums, counts)``: the ``[k, d]`` float32 change of the cell sums and
    the ``[k]`` int32 change of the counts, summed over all devices.
  """
  d = x.shape[-1]
  flat_x = x.reshape(-1, d)
  new, old = cell.reshape(-1), previous.reshape(-1)
  n = new.shape[0]
  block = min(block, n)
  n_blocks = -(-n // block)
  moved = new != old
  count = jnp.sum(moved, dtype=jnp.int32)
  order = compact(moved, n_blocks * block)
  iota = jax.lax.broadcasted_iota(jnp.int32, (k, block), 0)

  def add_block(carry):
    b, delta, moves = carry
    idx = jax.lax.dynamic_slice(order, (b * block,), (block,))
    valid = b * block + jnp.arange(block) < count
    signed = ((iota == new[idx][None, :]).astype(jnp.float32)
              - (iota == old[idx][None, :]).astype(jnp.float32))
    signed = jnp.where(valid[None, :], signed, 0.0)
    return (b + 1, delta + signed @ flat_x[idx].astype(jnp.float32),
            moves + jnp.sum(signed, axis=1).astype(jnp.int32))

  blocks = -(-count // block)
  init = (jnp.zeros((), jnp.int32),
          *jax.lax.pcast((jnp.zeros((k, d), jnp.float32),
                          jnp.zeros((k,), jnp.int32)), axis_name,
                         to="varying"))
  _, delta, moves = jax.lax.while_loop(lambda carry: carry[0] < blocks,
                                       add_block, init)
  return jax.lax.psum((delta, moves), axis_name)


def compact(mask: jnp.ndarray, size: int) -> jnp.ndarray:
  """``[size]`` int32 indices of ``mask``'s True entries in order, then 0s.

  ``jnp.nonzero(mask, size=size, fill_value=0)``, from a prefix sum and one
  scatter. The prefix sum runs within rows of :data:`COMPACT_WIDTH` entries
  as a matmul with a triangle of ones (exact: the sums are small integers),
  and across rows as a cumulative sum of the row totals: XLA:CPU's
  cumulative sum of the whole mask is several times slower.

  Args:
    mask: ``[n]`` bool.
    size: length of the result (at least ``mask``'s number of True entries).

  Returns:
    The indices, padded with 0.
  """
  n = mask.shape[0]
  width = min(n, COMPACT_WIDTH)
  rows = -(-n // width)
  ones = jnp.pad(mask.astype(jnp.float32), (0, rows * width - n))
  within = jnp.matmul(ones.reshape(rows, width),
                      jnp.triu(jnp.ones((width, width), jnp.float32)),
                      precision=jax.lax.Precision.HIGHEST).astype(jnp.int32)
  totals = within[:, -1]
  inclusive = within + (jnp.cumsum(totals) - totals)[:, None]
  target = jnp.where(mask, inclusive.reshape(-1)[:n] - 1, size)
  return jnp.zeros((size,), jnp.int32).at[target].set(
      jnp.arange(n, dtype=jnp.int32), mode="drop")


def all_gather(value: jnp.ndarray, axis_name: str) -> jnp.ndarray:
  """``[devices, *value.shape]``: every device's ``value``, the same on all.

  A ``psum`` of one-hot placed copies, so the result is typed as replicated
  (``all_gather`` results count as device-varying). Only for small arrays.

  Args:
    value: this device's array.
    axis_name: mesh axis.

  Returns:
    The stacked values of all devices along ``axis_name``.
  """
  devices = jax.lax.psum(1, axis_name)
  me = jax.lax.axis_index(axis_name)
  placed = jnp.zeros((devices,) + value.shape, value.dtype).at[me].set(value)
  return jax.lax.psum(placed, axis_name)
