"""The embedded default: Fashion-MNIST, IPC 10, mass weights."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the default configuration."""
  config = ml_collections.ConfigDict()
  config.dataset = "fashion_mnist"
  config.data_dir = ""  # empty: $PQD_DATA_DIR, then the Debian package
  config.ipc = 10
  config.seed = 0

  config.quantize = ml_collections.ConfigDict()
  config.quantize.method = "lloyd"
  config.quantize.weights = "mass"
  config.quantize.init = "kmeans++"
  config.quantize.n_init = 1
  config.quantize.num_iters = 100
  config.quantize.tol = 1e-4
  config.quantize.batch_size = 1024
  return config
