"""The latent diffusion prior: train, load, and img2img-decode centroids."""

from pqd_jax.prior.model import (
    Prior,
    build_scheduler,
    build_unet,
    load_prior,
    save_prior,
    with_dtype,
)
from pqd_jax.prior.sample import (
    SCHEDULERS,
    guided_prediction,
    img2img,
    with_scheduler,
)
from pqd_jax.prior.train import train_prior

__all__ = [
    "SCHEDULERS",
    "Prior",
    "build_scheduler",
    "build_unet",
    "guided_prediction",
    "img2img",
    "load_prior",
    "save_prior",
    "train_prior",
    "with_dtype",
    "with_scheduler",
]
