"""Free-support Wasserstein barycenters with ott-jax (D4M's formulation).

D4M reads its k-means prototypes as a Wasserstein barycenter: the ``k``-point
measure with *uniform* weights closest in W2 to the class. This module
computes that object directly with ott-jax's ``FreeWassersteinBarycenter``
(Cuturi & Doucet, 2014), so it can be compared with Lloyd's centroids: with
uniform weights fixed, the best support is (up to entropic blur) what k-means
finds, and letting the weights be the cell masses can only lower W2.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from ott.problems.linear import barycenter_problem
from ott.solvers.linear import continuous_barycenter, sinkhorn

from pqd_jax import checks
from pqd_jax.quantization import inputs

__all__ = ["BarycenterResult", "barycenter"]


class BarycenterResult(NamedTuple):
  """A free-support barycenter of one point cloud.

  Attributes:
    support: ``[k, *latent_shape]`` float32 support points.
    weights: ``[k]`` float32 uniform weights (sum to 1; ott fixes them).
    cost: scalar, the last regularised transport cost of the outer loop.
    converged: scalar bool, whether every inner Sinkhorn solve converged.
  """

  support: jax.Array
  weights: jax.Array
  cost: jax.Array
  converged: jax.Array


def barycenter(
    points: Any,
    k: int,
    *,
    rng: jax.Array | None = None,
    epsilon: float = 0.01,
    num_iters: int = 50,
    sinkhorn_iters: int = 5000,
) -> BarycenterResult:
  """Free-support W2 barycenter of one point cloud with ``k`` uniform atoms.

  Args:
    points: ``[n, *latent_shape]`` float points of one class.
    k: number of support points; at most ``n``.
    rng: PRNG key for the initial support (sampled from the points).
    epsilon: entropic regularisation, relative to the mean squared distance.
    num_iters: outer (support update) iterations.
    sinkhorn_iters: iterations of each inner Sinkhorn solve.

  Returns:
    A ``BarycenterResult``.

  Raises:
    ValueError: on bad input, or points that are all equal.
  """
  arr = inputs.check_latents(points)
  k = checks.integer("k", k, maximum=len(arr))
  epsilon = checks.number("epsilon", epsilon, positive=True)
  num_iters = checks.integer("num_iters", num_iters)
  sinkhorn_iters = checks.integer("sinkhorn_iters", sinkhorn_iters)
  rng = jax.random.key(0) if rng is None else checks.prng_key("rng", rng)
  flat = jnp.asarray(arr.reshape(arr.shape[0], -1), jnp.float32)
  n = flat.shape[0]
  # Absolute epsilon from the data's scale: mean squared distance to the mean.
  scale = jnp.mean(jnp.sum((flat - flat.mean(0)) ** 2, axis=-1))
  if not float(scale) > 0:
    raise ValueError(
        f"points must not all be equal: the barycenter's epsilon is relative "
        f"to their spread, which is {float(scale)}.")
  problem = barycenter_problem.FreeBarycenterProblem(
      y=flat[None], b=jnp.full((1, n), 1.0 / n),
      epsilon=float(epsilon * scale),
  )
  solver = continuous_barycenter.FreeWassersteinBarycenter(
      sinkhorn.Sinkhorn(max_iterations=sinkhorn_iters),
      max_iterations=num_iters,
  )
  out = jax.jit(lambda p, key: solver(p, bar_size=k, rng=key))(problem, rng)
  costs = out.costs
  last = jnp.max(jnp.where(costs >= 0, jnp.arange(costs.shape[0]), 0))
  conv = out.linear_convergence
  return BarycenterResult(
      support=out.x.reshape((k,) + arr.shape[1:]),
      weights=out.a,
      cost=costs[last],
      converged=jnp.all(jnp.where(conv >= 0, conv > 0, True)),
  )
