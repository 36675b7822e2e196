"""Device memory of the Stable Diffusion path, measured by XLA.

The SD-1 VAE and UNet are built with their published configurations
(``CompVis/stable-diffusion-v1-4``: VAE blocks 128/256/512/512, 2 layers,
4 latent channels; UNet blocks 320/640/1280/1280, 8 heads, cross-attention
768) from abstract parameters (``jax.eval_shape``: no weights are made or
downloaded). For each cell the computation the pipeline runs on one batch
is lowered and compiled for this machine's backend, and
``compiled.memory_analysis()`` gives its argument, output and temporary
bytes; their sum is what one device holds for that call (within the
backend's own buffer assignment). Cells:

- ``encode``: :func:`pqd_jax.autoencoder.model.encode_batch`, 512² images;
- ``decode``: :func:`pqd_jax.autoencoder.model.decode_batch`, 64² latents;
- ``unet``: one classifier-free-guided UNet call
  (:func:`pqd_jax.prior.sample.guided_prediction`, the batch doubled
  inside), with full or memory-efficient attention;
- ``student``: one training step of a ResNet-18 student on 224² images
  with online soft labels from a ResNet-18 teacher
  (:func:`pqd_jax.train.steps.kd_step`, the ImageNet config's
  augmentations): the largest step of the teacher and train stages (the
  classifiers compute in float32 only);
- ``predict``: the eval stage's forward pass of a ResNet-18 (class
  predictions of a batch of 224² images);

at several batch sizes, in float32 and bfloat16 (module compute dtype and
parameters). Each finished cell is appended to the results file and
skipped on a re-run::

  python benchmarks/sd_memory.py                      # every cell
  python benchmarks/sd_memory.py --parts=encode --batches=1,2 --dtypes=float32
"""

import argparse
import os
import time

import harness
import jax
import jax.numpy as jnp

from pqd_jax.autoencoder import model as ae_model
from pqd_jax.prior import sample

RESULTS = os.path.join(harness.RESULTS_DIR, "sd_memory.jsonl")
PARTS = ("encode", "decode", "unet", "unet_mea", "student", "predict")
CLASSIFIER_PARTS = ("student", "predict")
BATCHES = (1, 2, 4, 8, 16, 32)
DTYPES = ("float32", "bfloat16")
IMAGE, LATENT, TOKENS = 512, 64, 77
CLASSIFIER_IMAGE, CLASSES = 224, 1000


def vae(dtype):
  from diffusers import FlaxAutoencoderKL

  return FlaxAutoencoderKL(
      in_channels=3, out_channels=3,
      down_block_types=("DownEncoderBlock2D",) * 4,
      up_block_types=("UpDecoderBlock2D",) * 4,
      block_out_channels=(128, 256, 512, 512), layers_per_block=2,
      latent_channels=4, norm_num_groups=32, sample_size=IMAGE,
      dtype=jnp.dtype(dtype))


def unet(dtype, memory_efficient: bool):
  from diffusers import FlaxUNet2DConditionModel

  return FlaxUNet2DConditionModel(
      sample_size=LATENT, in_channels=4, out_channels=4,
      down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
      up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
      block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
      attention_head_dim=8, cross_attention_dim=768,
      use_memory_efficient_attention=memory_efficient,
      dtype=jnp.dtype(dtype))


def abstract_params(module, dtype):
  """The module's parameter shapes, in ``dtype``, without making them."""
  shapes = jax.eval_shape(module.init_weights, jax.random.key(0))
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype), shapes)


def lowered(part: str, batch: int, dtype: str):
  """The jitted call of ``part`` lowered for one batch."""
  spec = lambda *shape: jax.ShapeDtypeStruct(shape, dtype)
  if part == "student":
    return _kd_step(batch)
  if part == "predict":
    return _predict(batch)
  if part in ("encode", "decode"):
    model = vae(dtype)
    params = abstract_params(model, dtype)
    if part == "encode":
      return ae_model.encode_batch.lower(
          model, params, spec(batch, IMAGE, IMAGE, 3), jax.random.key(0),
          0.18215, sample=True)
    return ae_model.decode_batch.lower(
        model, params, spec(batch, 4, LATENT, LATENT), 0.18215)
  model = unet(dtype, memory_efficient=part == "unet_mea")
  params = abstract_params(model, dtype)
  step = jax.jit(sample.guided_prediction, static_argnums=0)
  return step.lower(model, params, spec(batch, 4, LATENT, LATENT),
                    jnp.zeros((batch,), jnp.int32),
                    spec(batch, TOKENS, 768), spec(TOKENS, 768), 8.0)


def _kd_step(batch: int):
  from pqd_jax import models
  from pqd_jax.train import start, steps

  model = models.ResNet18(num_classes=CLASSES, stem="imagenet")
  shape = (CLASSIFIER_IMAGE, CLASSIFIER_IMAGE, 3)
  tx, state, _ = start.initial_state(
      model, shape, num_steps=10, optimizer="adamw", learning_rate=1e-3,
      weight_decay=0.01, warmup_steps=0, seed=0)
  state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                       state)
  images = jax.ShapeDtypeStruct((batch, *shape), jnp.float32)
  batch_spec = {"image": images,
                "label": jax.ShapeDtypeStruct((batch,), jnp.int32),
                "weight": jax.ShapeDtypeStruct((batch,), jnp.float32)}
  return steps.kd_step.lower(
      state, batch_spec, jax.random.key(0), model=model, teacher=model,
      teacher_variables=steps.variables_of(state), tx=tx, temperature=20.0,
      aug=(("flip", True), ("crop_scale", (0.08, 1.0)), ("cutmix", True)))


def _predict(batch: int):
  from pqd_jax import models

  model = models.ResNet18(num_classes=CLASSES, stem="imagenet")
  shape = (CLASSIFIER_IMAGE, CLASSIFIER_IMAGE, 3)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape))))
  fn = jax.jit(lambda v, x: jnp.argmax(model.apply(v, x, train=False), -1))
  return fn.lower(variables,
                  jax.ShapeDtypeStruct((batch, *shape), jnp.float32))


def measure(part: str, batch: int, dtype: str) -> dict:
  t0 = time.perf_counter()
  compiled = lowered(part, batch, dtype).compile()
  seconds = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  row = {"argument_bytes": int(mem.argument_size_in_bytes),
         "output_bytes": int(mem.output_size_in_bytes),
         "temp_bytes": int(mem.temp_size_in_bytes),
         "alias_bytes": int(mem.alias_size_in_bytes),
         "flops": harness.compiled_flops(compiled),
         "compile_seconds": seconds}
  row["total_bytes"] = (row["argument_bytes"] + row["output_bytes"]
                        + row["temp_bytes"] - row["alias_bytes"])
  return row


def main(argv=None) -> None:
  harness.quiet_diffusers()
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--parts", default=",".join(PARTS))
  parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
  parser.add_argument("--dtypes", default=",".join(DTYPES))
  parser.add_argument("--out", default=RESULTS)
  args = parser.parse_args(argv)
  parts = [p for p in args.parts.split(",") if p]
  unknown = sorted(set(parts) - set(PARTS))
  if unknown:
    parser.error(f"--parts: unknown {unknown}; expected a subset of {PARTS}.")
  dtypes = [d for d in args.dtypes.split(",") if d]
  if sorted(set(dtypes) - set(DTYPES)):
    parser.error(f"--dtypes: expected a subset of {DTYPES}, got {dtypes}.")
  try:
    batches = harness.parse_ints(args.batches, "--batches")
  except ValueError as e:
    parser.error(str(e))
  results = harness.Results(args.out, key=("part", "dtype", "batch"))
  backend = jax.default_backend()
  for part in parts:
    for dtype in dtypes:
      for batch in batches:
        cell = (part, dtype, batch)
        if cell in results or (part in CLASSIFIER_PARTS
                               and dtype != "float32"):
          continue
        row = {"part": part, "dtype": dtype, "batch": batch,
               "backend": backend, "machine": harness.machine(),
               "date": time.strftime("%Y-%m-%d"), **measure(part, batch, dtype)}
        results.append(row)
        print(f"{part:9s} {dtype:9s} batch {batch:3d}: "
              f"{row['total_bytes'] / 2**30:7.2f} GiB "
              f"(temp {row['temp_bytes'] / 2**30:.2f}), compiled in "
              f"{row['compile_seconds']:.0f} s", flush=True)


if __name__ == "__main__":
  main()
