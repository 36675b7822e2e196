"""The embedded default: Fashion-MNIST, IPC 10, mass weights."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the default configuration."""
  config = ml_collections.ConfigDict()
  config.dataset = "fashion_mnist"
  config.data_dir = ""  # empty: $PQD_DATA_DIR, then the Debian package
  config.ipc = 10
  # Parameterised storage (IDC): each of the IPC stored images holds
  # factor x factor images at 1/factor of the side, which the students
  # train on as separate images, upsampled; 1 stores images as they are.
  config.factor = 1
  config.seed = 0
  config.train_split = "train"
  config.test_split = "test"
  # How test images reach the classifiers' side: 0 squashes them; 0.875
  # resizes the short side to side / 0.875 and centre-crops (SRe2L's
  # evaluation transform: 256 -> 224).
  config.test_crop = 0.0
  config.image_size = 28  # the autoencoder's input side
  # The teacher's and student's input side (0: image_size); the synthetic
  # images are resized to it (ImageNet: 512 for the VAE, 224 for ResNet-18).
  config.classifier_image_size = 0
  config.channels = 1
  # "" distils; "random" trains the student on IPC random real images per
  # class (uniform weights) instead: the baseline of the tables.
  config.baseline = ""
  # What the VAE and the diffusion UNet compute in (their parameters too):
  # "auto" (bfloat16 on a TPU backend, float32 elsewhere), "float32",
  # "bfloat16" or "float16" (not on TPU). Latents and images handed back to
  # the host stay float32. The small Fashion-MNIST models keep float32 on
  # every backend, so a TPU run reproduces the CPU's numbers; the ImageNet
  # config uses "auto".
  config.compute_dtype = "float32"

  # The host's input pipeline: grain worker processes decode and resize the
  # next batches of real images while the devices encode (latents), train
  # the teacher and evaluate (pqd_jax.data.pipeline.prefetch_batches).
  # Results are the same whatever these are, so no stage digest covers
  # them. 0 workers: one thread of the main process (in-memory
  # Fashion-MNIST has nothing to decode, and workers cost a start-up).
  config.input = ml_collections.ConfigDict()
  config.input.num_workers = 0
  config.input.prefetch = 2  # batches read ahead per worker

  # The embedded KL autoencoder: 28x28x1 -> 7x7x4 latents (196 numbers).
  # FlaxAutoencoderKL (16, 32, 32) trains at ~270 images/s on 2 CPU cores
  # (benchmarks/RESULTS.md, autoencoder section).
  config.autoencoder = ml_collections.ConfigDict()
  # "embedded": the checkpoint shipped in pqd_jax/assets (trained by
  # benchmarks/autoencoder_fmnist.py); "": train here; else a hub id / path.
  config.autoencoder.pretrained = "embedded"
  config.autoencoder.subfolder = ""
  config.autoencoder.revision = ""
  config.autoencoder.from_pt = False  # PyTorch weights (needs torch)
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
  # Images per device per encode call (device memory: benchmarks/RESULTS.md,
  # sd_memory, for the SD VAE).
  config.latents.batch_size = 256

  config.quantize = ml_collections.ConfigDict()
  # "lloyd" | "clvq" (latents in memory) | "stream" (CLVQ over the class
  # files read in chunks, num_iters passes; for datasets beyond RAM)
  config.quantize.method = "lloyd"
  config.quantize.weights = "mass"
  config.quantize.init = "kmeans++"  # | "kmeans||" | "random"
  config.quantize.n_init = 1
  config.quantize.num_iters = 100
  config.quantize.tol = 1e-4
  config.quantize.batch_size = 1024

  # The report: per-class distortion of the mass-weighted quantizer (its W2²)
  # for each K of sweep_ks (≤ the smallest class), on a log-log plot with the
  # fitted slope next to the theory's -2/d; () skips the sweep.
  config.report = ml_collections.ConfigDict()
  config.report.sweep_ks = (1, 2, 5, 10, 20, 50)

  # The class-conditional latent diffusion prior on the 7x7x4 latents (run
  # as 8x8 by the UNet). Sized by measurement: benchmarks/RESULTS.md, prior.
  config.prior = ml_collections.ConfigDict()
  # "embedded" (shipped, trained by benchmarks/prior_fmnist.py), "" (train
  # here) or a Stable Diffusion hub id / directory.
  config.prior.pretrained = "embedded"
  config.prior.prompt_template = "{}"
  config.prior.negative_prompt = "cartoon, anime, painting"
  config.prior.revision = ""
  # Words of an ImageNet WordNet id in the prompt: "first" synonym
  # ("tench") or "all" of its line ("tench, Tinca tinca"; D4M's prompts).
  config.prior.prompt_synonyms = "first"
  # Convert a hub checkpoint's PyTorch weights (needs torch installed).
  config.prior.from_pt = False
  # Stable Diffusion's UNet attention in chunks (same outputs, less memory).
  config.prior.memory_efficient_attention = False
  config.prior.block_out_channels = (64, 128)
  config.prior.layers_per_block = 1
  config.prior.attention_head_dim = 8
  config.prior.cross_attention_dim = 64
  config.prior.attention = "low"  # cross-attention at 4x4 only
  config.prior.num_train_timesteps = 1000
  config.prior.beta_schedule = "squaredcos_cap_v2"
  config.prior.prediction_type = "v_prediction"
  config.prior.num_steps = 3400  # ≈ 27 min at 273 latents/s (batch 128)
  config.prior.batch_size = 128
  config.prior.learning_rate = 1e-3
  config.prior.warmup_steps = 200
  config.prior.weight_decay = 0.0
  config.prior.cond_dropout = 0.1
  config.prior.ema_decay = 0.999
  config.prior.seed = 0

  # img2img decoding of the centroids (D4M: strength 0.7, guidance 8 for SD).
  config.decode = ml_collections.ConfigDict()
  config.decode.strength = 0.7
  # Guidance 4: 97.4% of img2img-ed centroids keep their class (2: 92.4%).
  config.decode.guidance_scale = 4.0
  config.decode.num_steps = 25
  # The sampler: "ddim" (eta = 0) or "pndm" (Stable Diffusion's default,
  # D4M's); both on the prior's own noise schedule.
  config.decode.scheduler = "ddim"
  # The set's images: "decoded" (the centroids through the prior and the
  # decoder) or "nearest" (the real training image whose latent is nearest
  # each centroid, with the centroid's weight).
  config.decode.images = "decoded"
  # Candidates per centroid: the real images nearest it ("nearest") or
  # img2img samples of it with different noise ("decoded"); the set keeps
  # the one chosen by "teacher" (the most typical of its class for the
  # teacher) or "spread" (the farthest from its class's mean).
  config.decode.candidates = 1
  config.decode.choose = "teacher"
  # Latents per device per img2img call (the UNet runs on twice as many:
  # classifier-free guidance), and per VAE decode call.
  config.decode.batch_size = 256
  config.decode.vae_batch_size = 256

  # The teacher: the DC-standard ConvNet-3 on the whole training split
  # (93.06% test accuracy in 9,400 steps, benchmarks/RESULTS.md).
  config.teacher = ml_collections.ConfigDict()
  # "embedded" (shipped, 93.06%), "" (train here) or a fit workdir to load.
  config.teacher.checkpoint = "embedded"
  _classifier(config.teacher)
  config.teacher.num_steps = 9400
  config.teacher.num_epochs = 0  # > 0: epochs instead of num_steps
  config.teacher.batch_size = 128
  config.teacher.optimizer = "adamw"
  config.teacher.learning_rate = 2e-3
  config.teacher.weight_decay = 1e-4
  config.teacher.warmup_steps = 200
  config.teacher.flip = True
  config.teacher.crop_scale = (0.6, 1.0)
  config.teacher.dsa = False
  config.teacher.seed = 0

  # The student: online KD from the teacher on the weighted synthetic set.
  config.student = ml_collections.ConfigDict()
  _classifier(config.student)
  config.student.weights = "quantizer"  # the quantizer's weights | "uniform"
  config.student.soft_labels = True
  config.student.temperature = 4.0
  # 2,000 keeps the default run under 15 min on the slower 2-core machine
  # (RESULTS.md); the IPC 10 curve gains < 0.5 point after 1,800 steps.
  config.student.num_steps = 2000
  config.student.num_epochs = 0  # > 0: epochs of the synthetic set instead
  config.student.batch_size = 100
  # True: a batch above the set's size is kept, with several augmented
  # views of each image (equal compute per step at any IPC); False: capped.
  config.student.fill_batch = False
  config.student.optimizer = "adamw"
  config.student.learning_rate = 1e-3
  config.student.weight_decay = 0.01
  # False: no weight decay on norm scales and biases (SRe2L's students).
  config.student.decay_norm_and_bias = True
  # Micro-batches per step (gradient accumulation) for a batch a device
  # cannot hold in one pass; the update is the whole batch's.
  config.student.grad_accumulation = 1
  config.student.warmup_fraction = 0.05
  config.student.flip = True
  config.student.crop_scale = (0.08, 1.0)
  config.student.dsa = True
  config.student.cutmix = True
  config.student.num_seeds = 1
  config.student.seed = 0  # the first student's; student i has seed + i
  # > 0: test accuracy at this many evenly spaced steps of each student
  # (the accuracy-versus-steps curve in results.json).
  config.student.eval_points = 0
  # The curve's test images: 0 for the whole split, else about this many
  # (a fixed class-balanced subset; results.json's accuracies stay on all).
  config.student.eval_images = 0
  return config


def _classifier(section: ml_collections.ConfigDict) -> None:
  """ConvNet-3 w128 with instance norm, the distillation tables' network."""
  section.arch = "convnet"  # "convnet" | "resnet18"
  section.width = 128
  section.depth = 3
  section.norm = "instance"
  section.stem = "small"  # resnet18 only
