"""The Fashion-MNIST config with another latent size.

``--config=pqd_jax/configs/fashion_mnist_latent.py:8`` (for the CLI or
``benchmarks/distill_accuracy.py``) uses 7x7x8 latents (392 numbers) instead
of the embedded 7x7x4 (196): the autoencoder and the prior are trained here
with the embedded ones' recipes (benchmarks/RESULTS.md, autoencoder_fmnist
and prior_fmnist), and only the number of latent channels differs. The
teacher, the student and its budget are the default's.
"""

import ml_collections

from pqd_jax.configs import fashion_mnist


def get_config(latent_channels: str = "8") -> ml_collections.ConfigDict:
  """The default config with ``latent_channels`` channels of 7x7 latents.

  Args:
    latent_channels: an integer >= 1, as text (the ``:<arg>`` of
      ``--config``).

  Raises:
    ValueError: for a value that is not an integer >= 1.
  """
  if not str(latent_channels).isdigit() or int(latent_channels) < 1:
    raise ValueError(f"latent_channels {latent_channels!r} is not an "
                     "integer >= 1.")
  config = fashion_mnist.get_config()
  config.autoencoder.pretrained = ""
  config.autoencoder.latent_channels = int(latent_channels)
  config.prior.pretrained = ""
  return config
