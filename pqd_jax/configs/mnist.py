"""MNIST (tfds ``mnist``, prepared in ``--config.data_dir``): 28×28×1, IPC 10.

The Fashion-MNIST default's networks and budgets; nothing is shipped for
MNIST, so the autoencoder, prior and teacher are trained in the run
(``benchmarks/RESULTS.md`` times them on Fashion-MNIST: ≈ 80 minutes on 2
CPU cores, minutes on a GPU).
"""

import ml_collections

from pqd_jax.configs import fashion_mnist


def get_config() -> ml_collections.ConfigDict:
  """Returns the MNIST configuration."""
  config = fashion_mnist.get_config()
  config.dataset = "mnist"
  config.autoencoder.pretrained = ""
  config.prior.pretrained = ""
  config.teacher.checkpoint = ""
  return config
