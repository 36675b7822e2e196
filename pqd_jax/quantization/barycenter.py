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
import numpy as np
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

  The solve runs in float32 on the points centred on their mean and scaled
  into [-1, 1] (so an offset or a tiny or huge scale loses no precision);
  the support and the cost are mapped back. Points that are all equal (one
  point, say) have that point as their barycenter, ``k`` times over.

  Returns:
    A ``BarycenterResult``.

  Raises:
    ValueError: on bad input.
  """
  arr = inputs.check_latents(points)
  k = checks.integer("k", k, maximum=len(arr))
  epsilon = checks.number("epsilon", epsilon, positive=True)
  num_iters = checks.integer("num_iters", num_iters)
  sinkhorn_iters = checks.integer("sinkhorn_iters", sinkhorn_iters)
  rng = jax.random.key(0) if rng is None else checks.prng_key("rng", rng)
  flat = arr.reshape(arr.shape[0], -1).astype(np.float64)
  n = flat.shape[0]
  shift = flat.mean(0)
  scale = float(np.abs(flat - shift).max())
  if scale == 0:
    return BarycenterResult(
        support=jnp.asarray(np.broadcast_to(arr[0], (k,) + arr.shape[1:]),
                            jnp.float32),
        weights=jnp.full((k,), 1.0 / k), cost=jnp.zeros(()),
        converged=jnp.asarray(True))
  flat = jnp.asarray((flat - shift) / scale, jnp.float32)
  # Absolute epsilon from the spread: mean squared distance to the mean.
  spread = jnp.mean(jnp.sum(flat ** 2, axis=-1))
  problem = barycenter_problem.FreeBarycenterProblem(
      y=flat[None], b=jnp.full((1, n), 1.0 / n),
      epsilon=float(epsilon * spread),
  )
  solver = continuous_barycenter.FreeWassersteinBarycenter(
      sinkhorn.Sinkhorn(max_iterations=sinkhorn_iters),
      max_iterations=num_iters,
  )
  out = jax.jit(lambda p, key: solver(p, bar_size=k, rng=key))(problem, rng)
  costs = out.costs
  last = jnp.max(jnp.where(costs >= 0, jnp.arange(costs.shape[0]), 0))
  conv = out.linear_convergence
  support = np.asarray(out.x, np.float64) * scale + shift
  return BarycenterResult(
      support=jnp.asarray(support.reshape((k,) + arr.shape[1:]), jnp.float32),
      weights=out.a,
      cost=jnp.asarray(float(costs[last]) * scale ** 2, jnp.float32),
      converged=jnp.all(jnp.where(conv >= 0, conv > 0, True)),
  )
