"""Per-class optimal quantization: Lloyd, CLVQ, weights, W2, barycenters."""

from pqd_jax.quantization.api import QuantizeResult, quantize
from pqd_jax.quantization.barycenter import BarycenterResult, barycenter
from pqd_jax.quantization.metrics import (
    cell_counts,
    distortion,
    nearest_members,
    nearest_points,
    w2,
)
from pqd_jax.quantization.stream import quantize_stream
from pqd_jax.quantization.weights import WEIGHT_SCHEMES, cell_weights

__all__ = [
    "BarycenterResult",
    "QuantizeResult",
    "WEIGHT_SCHEMES",
    "barycenter",
    "cell_counts",
    "cell_weights",
    "distortion",
    "nearest_members",
    "nearest_points",
    "quantize",
    "quantize_stream",
    "w2",
]
