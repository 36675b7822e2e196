"""pqd_jax: dataset distillation as push-forward optimal quantization."""

from pqd_jax.quantization import (
    BarycenterResult,
    QuantizeResult,
    barycenter,
    cell_weights,
    distortion,
    nearest_members,
    nearest_points,
    quantize,
    quantize_stream,
    w2,
)

__all__ = [
    "BarycenterResult",
    "QuantizeResult",
    "barycenter",
    "cell_weights",
    "distortion",
    "nearest_members",
    "nearest_points",
    "quantize",
    "quantize_stream",
    "w2",
]
__version__ = "0.1.0.dev0"
