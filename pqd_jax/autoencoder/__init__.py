"""The KL autoencoder: build or load, encode/decode, train a small one."""

from pqd_jax.autoencoder.model import (
    Autoencoder,
    build,
    decode,
    encode,
    init_autoencoder,
    load_pretrained,
    save_pretrained,
)

__all__ = [
    "Autoencoder",
    "build",
    "decode",
    "encode",
    "init_autoencoder",
    "load_pretrained",
    "save_pretrained",
]
