"""The paper's ImageNet-1k setting (D4M / DDOQ), for a GPU or TPU host.

- Data: tfds ``imagenet2012`` prepared in ``--config.data_dir`` (tfds needs
  the manual download: ``tfds build imagenet2012 --manual_dir=<tars>``);
  images resized to 512×512 (aspect ratio ignored, as D4M), test = the
  50,000 validation images, short side resized to 256 and centre-cropped
  to 224 (SRe2L's and D4M's evaluation).
- Latent space: the Stable Diffusion v1 VAE (4×64×64 latents, ×0.18215),
  a posterior sample per image as D4M.
- Prior: the Stable Diffusion v1 UNet with the CLIP text encoder; the prompt
  of a class is its whole synonym line ("tench, Tinca tinca"), negative
  prompt "cartoon, anime, painting", img2img strength 0.7, guidance 8, 50
  steps of the checkpoint's PNDM sampler (D4M).
- Teacher and student: ResNet-18 with the ImageNet stem at 224×224 (the
  generated 512×512 images are resized to 224, as D4M). The papers' teacher
  is torchvision's pretrained ResNet-18 (69.8% top-1):
  ``--config.teacher.checkpoint=torchvision:<file>`` with its state_dict
  (``resnet18-f37072fd.pth``, torchvision's ``ResNet18_Weights.IMAGENET1K_V1``,
  from https://download.pytorch.org/models/resnet18-f37072fd.pth on any
  machine with network access, or a ``.safetensors`` copy; read without
  torch). Without it, a teacher is trained here (90 epochs), or
  ``teacher.checkpoint`` names a fit workdir. The student follows the
  SRe2L/D4M recipe: KD at T = 20 from the teacher on RandomResizedCrop
  (0.08–1) + flip + CutMix views, AdamW 1e-3, wd 0.01 on kernels only,
  cosine, batch 1024 (gradient accumulation where a device cannot hold
  it), 300 epochs, the final accuracy of 3 seeds.
- IPC 10 by default; the paper's table is IPC 10/50/100/200
  (``--config.ipc=50``).
- Device memory: per-device batches sized by XLA's memory analysis
  (benchmarks/RESULTS.md, sd_memory) and ``compute_dtype = "auto"``: the VAE
  and the UNet compute in bfloat16 on a TPU (the UNet's 3.2 GiB of float32
  parameters halve), float32 elsewhere; ``--config.compute_dtype=float32``
  keeps a TPU in float32, ``bfloat16`` puts a GPU in it.

Weights come from the hub (``CompVis/stable-diffusion-v1-4`` at revision
``bf16`` holds Flax weights for the VAE, UNet and text encoder); point
``autoencoder.pretrained`` and ``prior.pretrained`` at a local copy for an
offline host.

Where this config differs from D4M, and why (README: "pqd_jax vs D4M/DDOQ
protocol" gives the flag that switches each):

- The quantizer: the stream CLVQ (3 passes, then an exact recount) with
  cell-mass weights is the method (DDOQ); ``--config.quantize.method=d4m``
  with ``--config.quantize.weights=uniform`` and
  ``--config.student.weights=uniform`` is D4M's exact quantizer and set.
- Stable Diffusion v1-4 instead of v1-5: its hub copy holds Flax weights;
  v1-5's holds PyTorch weights, which ``prior.from_pt`` and
  ``autoencoder.from_pt`` convert when torch is installed (the two share
  the VAE).
- Soft labels are computed online from the teacher for every view the
  student sees, where SRe2L/D4M store the teacher's logits of 300 epochs
  of crops: the same labels, without storing ~TBs of logits.
- No safety checker: D4M's pipeline blacks out images it flags.
"""

import ml_collections

from pqd_jax.configs import fashion_mnist

SD_HUB_ID = "CompVis/stable-diffusion-v1-4"
SD_REVISION = "bf16"
NUM_TRAIN_IMAGES = 1_281_167


def get_config() -> ml_collections.ConfigDict:
  """Returns the ImageNet-1k configuration."""
  config = fashion_mnist.get_config()
  config.dataset = "imagenet2012"
  config.test_split = "validation"
  # SRe2L's / D4M's evaluation: short side to 256, centre crop 224.
  config.test_crop = 224 / 256
  config.image_size = 512
  config.classifier_image_size = 224
  config.channels = 3
  config.ipc = 10
  # JPEG decode + resize in grain worker processes, overlapping the devices
  # (benchmarks/input_speed.py measures images/s per worker). The encode
  # (SD VAE at 512²) needs a few workers; the ResNet-18 teacher at 224²
  # wants thousands of images/s: raise it toward the host's cores.
  config.input.num_workers = 16
  # bfloat16 on a TPU, float32 elsewhere (the batch sizes below fit either).
  config.compute_dtype = "auto"

  ae = config.autoencoder
  ae.pretrained, ae.subfolder, ae.revision = SD_HUB_ID, "vae", SD_REVISION
  ae.channels, ae.image_size = 3, 512
  config.latents.sample = True
  config.latents.dtype = "float16"
  # Per device, from XLA's memory analysis of the SD-1 VAE at 512 px in
  # float32 (benchmarks/RESULTS.md, sd_memory): encode 16 = 6.2 GiB and
  # decode 8 = 7.2 GiB fit a 16 GB v5e chip with margin (32 GB v4: 32, 16).
  config.latents.batch_size = 16

  # 1.28M latents of 4x64x64 are 21 GB in float16: stream them from the
  # class files (memory independent of N), 3 CLVQ passes and a recount.
  config.quantize.method = "stream"
  config.quantize.num_iters = 3
  config.quantize.batch_size = 256
  # No distortion-vs-K sweep: each K is another 3 passes over 21 GB.
  config.report.sweep_ks = ()

  config.prior.pretrained = SD_HUB_ID
  config.prior.revision = SD_REVISION
  config.prior.prompt_template = "{}"
  config.prior.negative_prompt = "cartoon, anime, painting"
  config.prior.prompt_synonyms = "all"  # "tench, Tinca tinca", as D4M
  config.prior.memory_efficient_attention = True

  config.decode.strength = 0.7
  config.decode.guidance_scale = 8.0
  config.decode.num_steps = 50
  config.decode.scheduler = "pndm"  # the checkpoint's own, as D4M samples
  # The guided UNet step at 16 latents per device (32 with guidance) takes
  # 8.2 GiB in float32 with memory-efficient attention (full attention:
  # 23.4 GiB); a 32 GB v4 chip takes 32 (13.2 GiB).
  config.decode.batch_size = 16
  config.decode.vae_batch_size = 8

  for section in (config.teacher, config.student):
    section.arch = "resnet18"
    section.stem = "imagenet"

  t = config.teacher
  # "torchvision:<resnet18-f37072fd.pth>" (the papers' teacher), a fit
  # workdir with a trained ResNet-18, or "" to train one here.
  t.checkpoint = ""
  t.batch_size = 256
  t.num_steps, t.num_epochs = 0, 90
  t.optimizer = "sgd"
  t.learning_rate = 0.1
  t.weight_decay = 1e-4
  t.warmup_steps = 5 * NUM_TRAIN_IMAGES // 256
  t.flip, t.crop_scale, t.dsa = True, (0.08, 1.0), False

  s = config.student
  s.temperature = 20.0
  # SRe2L's batch of 1024, in 4 passes of 256 per device on one chip (the
  # KD step with the ResNet-18 teacher: 8.7 GiB at 256, benchmarks/RESULTS.md
  # sd_memory); --config.student.grad_accumulation=1 on 4 or more chips.
  s.batch_size = 1024
  s.grad_accumulation = 4
  s.num_steps, s.num_epochs = 0, 300
  s.optimizer = "adamw"
  s.learning_rate = 1e-3
  s.weight_decay = 0.01
  s.decay_norm_and_bias = False  # as SRe2L: kernels only
  s.num_seeds = 3
  s.warmup_fraction = 0.0
  s.flip, s.crop_scale, s.dsa, s.cutmix = True, (0.08, 1.0), False, True
  return config
