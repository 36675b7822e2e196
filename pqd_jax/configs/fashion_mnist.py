"""The embedded default: Fashion-MNIST, IPC 10, mass weights."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the default configuration."""
  config = ml_collections.ConfigDict()
  config.dataset = "fashion_mnist"
  config.data_dir = ""  # empty: $PQD_DATA_DIR, then the Debian package
  config.ipc = 10
  config.seed = 0

  # The embedded KL autoencoder: 28x28x1 -> 7x7x4 latents (196 numbers).
  # FlaxAutoencoderKL (16, 32, 32) trains at ~270 images/s on 2 CPU cores
  # (benchmarks/RESULTS.md, autoencoder section).
  config.autoencoder = ml_collections.ConfigDict()
  config.autoencoder.channels = 1
  config.autoencoder.image_size = 28
  config.autoencoder.block_out_channels = (16, 32, 32)
  config.autoencoder.layers_per_block = 1
  config.autoencoder.latent_channels = 4
  config.autoencoder.norm_num_groups = 8
  config.autoencoder.kl_weight = 1e-4
  config.autoencoder.learning_rate = 2e-3
  config.autoencoder.weight_decay = 1e-4
  config.autoencoder.warmup_steps = 200
  config.autoencoder.batch_size = 128
  config.autoencoder.num_steps = 2400
  config.autoencoder.seed = 0

  # Encoded latents: posterior mean (False) or a sample (True, as D4M).
  config.latents = ml_collections.ConfigDict()
  config.latents.sample = False
  config.latents.dtype = "float16"

  config.quantize = ml_collections.ConfigDict()
  config.quantize.method = "lloyd"
  config.quantize.weights = "mass"
  config.quantize.init = "kmeans++"
  config.quantize.n_init = 1
  config.quantize.num_iters = 100
  config.quantize.tol = 1e-4
  config.quantize.batch_size = 1024
  return config
