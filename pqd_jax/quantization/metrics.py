"""Quantization error and W2 between a class and its weighted quantizer.

For a fixed support ``c_1..c_k``, the weights that bring ``Σ w_j δ_{c_j}``
closest in W2 to the empirical measure ``(1/n) Σ δ_{x_i}`` are the Voronoi
cell masses, and then ``W2² = distortion`` (mean squared distance to the
nearest centroid): every point is simply moved to its nearest centroid. For
any other weights (uniform = D4M, √count) the optimal plan must split cells,
so W2 is larger; :func:`w2` measures it with an exact linear program (float64,
HiGHS) or with ott-jax's Sinkhorn.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.sparse
from ott.geometry import pointcloud
from ott.problems.linear import linear_problem
from ott.solvers.linear import sinkhorn
from ott.tools import sinkhorn_divergence as ott_divergence

from pqd_jax import checks

__all__ = ["W2_METHODS", "cell_counts", "distortion", "nearest_members",
           "nearest_points", "sinkhorn_divergence", "w2"]

W2_METHODS = ("exact", "sinkhorn")
# The exact LP has n·k variables; beyond this use method="sinkhorn".
_MAX_LP_VARIABLES = 4_000_000


def _as_2d(name: str, value: Any) -> np.ndarray:
  arr = np.asarray(value)
  if arr.ndim < 2 or arr.shape[0] == 0:
    raise ValueError(
        f"{name} must have shape [n, *latent_shape] with n >= 1, got "
        f"{arr.shape}."
    )
  if not np.issubdtype(arr.dtype, np.floating):
    raise ValueError(f"{name} must be floating point, got {arr.dtype}.")
  flat = arr.reshape(arr.shape[0], -1).astype(np.float64)
  if not np.isfinite(flat).all():
    raise ValueError(f"{name} contains NaN or Inf.")
  return flat


def _pair(points, centroids):
  x = _as_2d("points", points)
  c = _as_2d("centroids", centroids)
  if x.shape[1] != c.shape[1]:
    raise ValueError(
        f"points have {x.shape[1]} features per row but centroids have "
        f"{c.shape[1]}; their trailing shapes must match."
    )
  return x, c


def _sq_dists(x: np.ndarray, c: np.ndarray) -> np.ndarray:
  """``[n, k]`` float64 squared distances (direct differences, no matmul)."""
  out = np.empty((x.shape[0], c.shape[0]))
  for j in range(c.shape[0]):
    diff = x - c[j]
    out[:, j] = np.einsum("nd,nd->n", diff, diff)
  return out


def cell_counts(points: Any, centroids: Any) -> np.ndarray:
  """Number of points nearest to each centroid (float64 reference).

  Args:
    points: ``[n, *latent_shape]``.
    centroids: ``[k, *latent_shape]``.

  Returns:
    ``[k]`` int64 counts (ties go to the lowest index).
  """
  x, c = _pair(points, centroids)
  return np.bincount(np.argmin(_sq_dists(x, c), axis=1),
                     minlength=c.shape[0])


def nearest_members(points: Any, centroids: Any) -> np.ndarray:
  """The point nearest each centroid (float64 reference).

  Args:
    points: ``[n, *latent_shape]``, e.g. the class's latents.
    centroids: ``[k, *latent_shape]``.

  Returns:
    ``[k]`` int64 row of ``points`` nearest each centroid (ties go to the
    lowest row); two centroids may share their nearest point.
  """
  return nearest_points(points, centroids, 1)[:, 0]


def nearest_points(points: Any, centroids: Any, count: int) -> np.ndarray:
  """The ``count`` points nearest each centroid, nearest first.

  Args:
    points: ``[n, *latent_shape]``.
    centroids: ``[k, *latent_shape]``.
    count: points per centroid, 1 to ``n``.

  Returns:
    ``[k, count]`` int64 rows of ``points`` (ties go to the lowest row);
    centroids may share points.

  Raises:
    ValueError: for a count outside ``[1, n]``.
  """
  x, c = _pair(points, centroids)
  count = checks.integer("count", count)
  if count > len(x):
    raise ValueError(f"count={count} is more than the {len(x)} points.")
  order = np.argsort(_sq_dists(x, c), axis=0, kind="stable")
  return order[:count].T


def distortion(points: Any, centroids: Any) -> float:
  """Mean squared distance to the nearest centroid (float64 reference).

  Args:
    points: ``[n, *latent_shape]``.
    centroids: ``[k, *latent_shape]``.

  Returns:
    The distortion, which is W2² to the mass-weighted quantizer.
  """
  x, c = _pair(points, centroids)
  return float(np.mean(np.min(_sq_dists(x, c), axis=1)))


def _normalised_weights(weights, k):
  w = np.asarray(weights, np.float64)
  if w.shape != (k,):
    raise ValueError(f"weights must have shape [{k}], got {w.shape}.")
  if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
    raise ValueError(
        "weights must be finite, non-negative and not all zero, got "
        f"{w.tolist()[:10]}."
    )
  return w / w.sum()


def _exact_w2_sq(x, c, b):
  """Exact W2² between uniform points and weighted centroids (LP, HiGHS)."""
  n, k = x.shape[0], c.shape[0]
  if n * k > _MAX_LP_VARIABLES:
    raise ValueError(
        f"method='exact' solves an LP with n*k = {n * k} variables (limit "
        f"{_MAX_LP_VARIABLES}); use method='sinkhorn' for this size."
    )
  cost = _sq_dists(x, c).reshape(-1)
  rows = scipy.sparse.kron(scipy.sparse.eye(n), np.ones((1, k)))
  cols = scipy.sparse.kron(np.ones((1, n)), scipy.sparse.eye(k))
  a_eq = scipy.sparse.vstack([rows, cols]).tocsr()
  b_eq = np.concatenate([np.full(n, 1.0 / n), b])
  res = scipy.optimize.linprog(cost, A_eq=a_eq, b_eq=b_eq, bounds=(0, None),
                               method="highs")
  if res.status != 0:
    raise RuntimeError(f"The exact OT linear program failed: {res.message}")
  return float(res.fun)


def _sinkhorn_w2_sq(x, c, b, epsilon, max_iterations):
  """W2² estimated by ott-jax's entropic plan: ``<P, C>``.

  Solved in float32 on ``(· - mean) / scale`` (the points' mean, the largest
  deviation from it), where the squared costs can neither cancel nor
  overflow, and scaled back by ``scale²`` in float64.
  """
  shift = x.mean(0)
  scale = max(np.abs(x - shift).max(), np.abs(c - shift).max())
  if scale == 0:
    return 0.0
  xj = jnp.asarray((x - shift) / scale, jnp.float32)
  cj = jnp.asarray((c - shift) / scale, jnp.float32)
  geom = pointcloud.PointCloud(xj, cj, epsilon=epsilon,
                               relative_epsilon="mean")
  prob = linear_problem.LinearProblem(
      geom, jnp.full((x.shape[0],), 1.0 / x.shape[0]),
      jnp.asarray(b, jnp.float32))
  solver = sinkhorn.Sinkhorn(max_iterations=max_iterations, threshold=1e-3)
  out = jax.jit(solver)(prob)
  if not bool(out.converged):
    raise RuntimeError(
        f"Sinkhorn did not converge in {max_iterations} iterations at "
        f"relative epsilon {epsilon}; raise max_iterations or epsilon."
    )
  return float(out.primal_cost) * scale ** 2


def w2(
    points: Any,
    centroids: Any,
    weights: Any = None,
    *,
    method: str = "exact",
    epsilon: float = 1e-3,
    max_iterations: int = 20_000,
) -> float:
  """W2 distance between a class's points and a weighted quantizer.

  Args:
    points: ``[n, *latent_shape]`` the class's points (uniform mass 1/n).
    centroids: ``[k, *latent_shape]`` the support of the quantizer.
    weights: ``[k]`` non-negative weights (any scale); None means the
      Voronoi cell masses, for which W2² is the distortion exactly.
    method: for explicit weights: ``"exact"`` (LP in float64) or
      ``"sinkhorn"`` (ott-jax; the transport cost ``<P, C>`` of the entropic
      plan at ``epsilon`` × the mean cost, solved to a marginal error of
      1e-3; it approaches the exact value as epsilon shrinks).
    epsilon: relative entropic regularisation for ``"sinkhorn"``.
    max_iterations: Sinkhorn iterations.

  Returns:
    W2 (not squared).

  Raises:
    ValueError: on bad input or an unknown method.
  """
  checks.choice("method", method, W2_METHODS)
  if method == "sinkhorn":
    checks.number("epsilon", epsilon, positive=True)
    checks.integer("max_iterations", max_iterations)
  x, c = _pair(points, centroids)
  if weights is None:
    return float(np.sqrt(np.mean(np.min(_sq_dists(x, c), axis=1))))
  b = _normalised_weights(weights, c.shape[0])
  if method == "exact":
    return float(np.sqrt(max(_exact_w2_sq(x, c, b), 0.0)))
  return float(np.sqrt(max(_sinkhorn_w2_sq(x, c, b, epsilon,
                                           max_iterations), 0.0)))


def sinkhorn_divergence(x: Any, y: Any, *, epsilon: float = 0.05,
                        max_iterations: int = 5_000) -> float:
  """Debiased Sinkhorn divergence between two point clouds (uniform mass).

  ``S(x, y) = OT_ε(x, y) − (OT_ε(x, x) + OT_ε(y, y)) / 2`` with the squared
  Euclidean cost (ott-jax): 0 for identical clouds, positive otherwise, and
  between W2² and the MMD as ε goes from 0 to ∞. Compare generated samples
  with real data next to the divergence between two halves of the real data.

  Args:
    x: ``[n, *shape]`` points.
    y: ``[m, *shape]`` points.
    epsilon: entropic regularisation, absolute, in units of squared
      distance (the same value must be used for numbers to be compared).
    max_iterations: Sinkhorn iterations per term.

  Returns:
    The divergence (in squared-distance units).

  Raises:
    ValueError: for empty clouds, mismatched point shapes, an epsilon that
      is not a finite number > 0 or max_iterations < 1.
  """
  a, b = _as_2d("x", x), _as_2d("y", y)
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"x has {a.shape[1]} features per point but y has "
                     f"{b.shape[1]}; their trailing shapes must match.")
  epsilon = checks.number("epsilon", epsilon, positive=True)
  max_iterations = checks.integer("max_iterations", max_iterations)
  value, _ = ott_divergence.sinkhorn_divergence(
      pointcloud.PointCloud, jnp.asarray(a, jnp.float32),
      jnp.asarray(b, jnp.float32), epsilon=epsilon,
      solve_kwargs={"max_iterations": max_iterations, "threshold": 1e-4})
  return float(value)
