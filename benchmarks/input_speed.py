"""Input speed: JPEG decode + resize through grain workers, and encode waits.

The ImageNet path reads JPEGs from a tfds array_record dataset
(:class:`pqd_jax.data.sources.TfdsSource`) through
:func:`pqd_jax.data.pipeline.prefetch_batches`. This benchmark builds (once,
cached under ``--data-dir``) such a dataset of ``--num-images`` 500×375 RGB
JPEGs in 10 classes (ImageNet's typical size; smooth random colour fields
with pixel noise, about 80 KB each against ImageNet's ~110 KB), then
measures:

- ``decode``: images/s decoded, resized to ``--sizes`` (224: the
  classifiers' input; 512: the SD VAE's) and converted to float32 in
  ``[-1, 1]``, with 0 (a thread of this process), 1, 2, ... grain workers
  (``--workers``), every image once in a shuffled order, median of
  ``--repeats`` runs. ``images_per_s`` counts the whole run (worker
  start-up included), ``steady_images_per_s`` the second half of the
  batches (8 batches at least), ``first_batch_s`` the wait for the first.
- ``encode``: :func:`pqd_jax.autoencoder.latents.encode_source` with a
  small randomly initialised KL autoencoder of the project (``--ae-blocks``)
  on ``--encode-images`` images at ``--encode-size``: the seconds the loop
  waits for its next batch of images against its total (``wait_share``;
  ``steady_wait_share`` without the first batch, which waits for the
  workers to start).

Each finished cell (kind, size, workers, number of images) is appended to
``benchmarks/results/input_speed.jsonl`` with this machine's description and
skipped on a re-run::

  python benchmarks/input_speed.py                  # every cell
  python benchmarks/input_speed.py --num-images=200 --sizes=224 --workers=0,2
"""

import argparse
import os
import statistics
import tempfile
import time

import harness
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from pqd_jax.autoencoder import latents
from pqd_jax.autoencoder import model as ae_model
from pqd_jax.data import pipeline, sources

RESULTS = os.path.join(harness.RESULTS_DIR, "input_speed.jsonl")
DATA_DIR = os.path.join(tempfile.gettempdir(), "pqd_jax_input_speed")
NAME = "pqd_input_speed"  # the tfds dataset's name
WIDTH, HEIGHT, CLASSES = 500, 375, 10


def random_jpeg(gen: np.random.Generator, path: str) -> None:
  """A 500×375 JPEG: a smooth random colour field with pixel noise."""
  coarse = gen.integers(0, 256, (HEIGHT // 25, WIDTH // 25, 3), np.uint8)
  field = np.asarray(Image.fromarray(coarse).resize((WIDTH, HEIGHT),
                                                    Image.Resampling.BICUBIC))
  noise = gen.normal(0, 12, field.shape)
  image = np.clip(field + noise, 0, 255).astype(np.uint8)
  Image.fromarray(image).save(path, quality=90)


class PqdInputSpeed(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """``--num-images`` random JPEGs in 10 classes (the ``train`` split).

  Not registered with tfds: the source opens the prepared files by name
  (tfds's read-only builder), which grain's workers unpickle by reference
  (a builder class of this script would be pickled by value and registered
  twice in a worker).
  """

  VERSION = tfds.core.Version("1.0.0")
  num_images = 3000  # set by build() before preparing
  jpeg_dir = ""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(HEIGHT, WIDTH, 3),
                                         encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(num_classes=CLASSES),
        }),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    gen = np.random.default_rng(0)
    for i in range(self.num_images):
      path = os.path.join(self.jpeg_dir, f"{i:06d}.jpg")
      random_jpeg(gen, path)
      yield i, {"image": path, "label": i % CLASSES}


def build(data_dir: str, num_images: int) -> str:
  """The dataset's tfds data_dir (``<data_dir>/n<num_images>``), built once.

  Built without TensorFlow, as array_record (what TfdsSource reads).
  """
  root = os.path.join(data_dir, f"n{num_images}")
  info = os.path.join(root, NAME, str(PqdInputSpeed.VERSION),
                      "dataset_info.json")  # written last by tfds
  if not os.path.isfile(info):
    with tempfile.TemporaryDirectory() as jpegs:
      PqdInputSpeed.num_images, PqdInputSpeed.jpeg_dir = num_images, jpegs
      PqdInputSpeed(data_dir=root,
                    file_format="array_record").download_and_prepare()
  return root


def open_split(root: str, size: int) -> sources.TfdsSource:
  """The dataset read as the pipeline reads it: RGB, resized to ``size``."""
  return sources.TfdsSource(NAME, "train", data_dir=root, image_size=size,
                            channels=3)


def read_all(source: sources.ImageSource, batch_size: int, workers: int,
             prefetch: int) -> tuple[float, float, float | None]:
  """Reads every image once (shuffled order) through the pipeline.

  Returns:
    ``(seconds, seconds to the first batch, images/s over the second half
    of the batches)``; the last is past the workers' start-up and the
    batches they had read ahead (None for fewer than 8 batches).
  """
  order = np.random.default_rng(0).permutation(len(source))
  batches = pipeline.split_batches(order, batch_size)
  shape = source[0][0].shape
  t0 = time.perf_counter()
  done = []  # when each batch was ready
  for batch in pipeline.prefetch_batches(source, batches, num_workers=workers,
                                         prefetch=prefetch):
    # The float32 [-1, 1] rows, as the device path converts them.
    np.asarray(pipeline.unit_rows([batch], source, shape))
    done.append(time.perf_counter() - t0)
  half = len(batches) // 2
  steady = None
  if len(batches) >= 8:
    steady = sum(map(len, batches[half + 1:])) / (done[-1] - done[half])
  return done[-1], done[0], steady


def measure_decode(root: str, size: int, workers: int, *, batch_size: int,
                   prefetch: int, repeats: int) -> dict:
  """images/s through the pipeline, median of ``repeats`` runs."""
  source = open_split(root, size)
  runs = [read_all(source, batch_size, workers, prefetch)
          for _ in range(repeats)]
  steady = [r[2] for r in runs if r[2] is not None]
  return {"images_per_s": len(source) / statistics.median(r[0] for r in runs),
          "steady_images_per_s": statistics.median(steady) if steady
          else None,
          "seconds": [r[0] for r in runs],
          "first_batch_s": statistics.median(r[1] for r in runs)}


def autoencoder(blocks: tuple[int, ...], size: int) -> ae_model.Autoencoder:
  """A randomly initialised RGB KL autoencoder with these blocks."""
  config = ml_collections.ConfigDict(dict(
      channels=3, image_size=size, block_out_channels=blocks,
      layers_per_block=1, latent_channels=4, norm_num_groups=8))
  return ae_model.init_autoencoder(config, jax.random.key(0))


class Subset(sources.ImageSource):
  """The records ``keep`` of a source (tfds stores them shuffled)."""

  def __init__(self, source: sources.ImageSource, keep: np.ndarray):
    self.source, self.keep = source, np.asarray(keep)
    self.labels, self.class_names = source.labels[keep], source.class_names

  def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
    return self.source[int(self.keep[index])]

  def read(self, indices=None) -> np.ndarray:
    """The images at ``indices`` (default all) of the subset."""
    return self.source.read(self.keep if indices is None
                            else self.keep[np.asarray(indices)])


def balanced(source: sources.ImageSource, n: int) -> np.ndarray:
  """``n`` records taken from the classes in turn, in source order."""
  groups = pipeline.class_indices(source)
  turns = [g[i] for i in range(max(map(len, groups))) for g in groups
           if i < len(g)]
  return np.sort(np.asarray(turns[:n], np.int64))


def measure_encode(root: str, size: int, workers: int, *, num_images: int,
                   blocks: tuple[int, ...], batch_size: int,
                   prefetch: int) -> dict:
  """The encode loop's waits for its next batch of images, and its total."""
  source = open_split(root, size)
  head = Subset(source, balanced(source, num_images))
  ae = autoencoder(blocks, size)
  # Compiled once before timing (the first call of every batch shape).
  ae_model.encode(ae, np.zeros((batch_size, size, size, 3), np.float32),
                  batch_size=batch_size)
  waits = []
  prefetch_batches = pipeline.prefetch_batches

  def timed_batches(*args, **kwargs):  # the loop's waits for next(ahead)
    ahead = prefetch_batches(*args, **kwargs)
    try:
      while True:
        t0 = time.perf_counter()
        batch = next(ahead, None)
        if batch is None:
          return
        waits.append(time.perf_counter() - t0)
        yield batch
    finally:
      ahead.close()

  pipeline.prefetch_batches = timed_batches
  try:
    with tempfile.TemporaryDirectory() as out:
      t0 = time.perf_counter()
      latents.encode_source(ae, head, out, batch_size=batch_size,
                            progress=False, num_workers=workers,
                            prefetch=prefetch)
      total = time.perf_counter() - t0
  finally:
    pipeline.prefetch_batches = prefetch_batches
  return {"seconds": total, "wait_s": sum(waits),
          "wait_share": sum(waits) / total,
          "first_wait_s": waits[0] if waits else 0.0,
          "steady_wait_share": sum(waits[1:]) / max(total - waits[0], 1e-9)
          if waits else 0.0,
          "images_per_s": len(head) / total, "batches": len(waits)}


def _ints(parser, flag: str, text: str, minimum: int = 1,
          unique: bool = True) -> list[int]:
  try:
    return harness.parse_ints(text, f"--{flag}", minimum, unique)
  except ValueError as e:
    parser.error(str(e))


def main(argv=None) -> None:
  harness.quiet_diffusers()
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num-images", type=int, default=3000)
  parser.add_argument("--data-dir", default=DATA_DIR,
                      help="where the JPEG dataset is built and cached")
  parser.add_argument("--sizes", default="224,512")
  parser.add_argument("--workers", default="0,1,2")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--prefetch", type=int, default=2)
  parser.add_argument("--cells", default="decode,encode")
  parser.add_argument("--encode-images", type=int, default=512)
  parser.add_argument("--encode-size", type=int, default=224)
  parser.add_argument("--encode-batch-size", type=int, default=16)
  # Four blocks: 224 px → 28² latents (the KL autoencoder's mid-block
  # attention over 112² positions would need GBs); ~50 images/s on 2 cores.
  parser.add_argument("--ae-blocks", default="8,8,16,16")
  parser.add_argument("--out", default=RESULTS)
  args = parser.parse_args(argv)
  sizes = _ints(parser, "sizes", args.sizes)
  workers = _ints(parser, "workers", args.workers, minimum=0)
  blocks = tuple(_ints(parser, "ae-blocks", args.ae_blocks, unique=False))
  kinds = [c for c in args.cells.split(",") if c]
  if not kinds or set(kinds) - {"decode", "encode"}:
    parser.error(f"--cells: expected a subset of decode,encode, got "
                 f"{args.cells!r}.")
  if args.num_images < CLASSES or args.encode_images < CLASSES:
    parser.error(f"--num-images and --encode-images must be >= {CLASSES} "
                 "(one image per class at least).")
  if args.repeats < 1:
    parser.error("--repeats must be >= 1.")
  results = harness.Results(args.out, key=("cell", "size", "workers",
                                           "num_images"))
  root = None
  cells = [("decode", s, w) for s in sizes for w in workers
           if "decode" in kinds]
  cells += [("encode", args.encode_size, w) for w in workers
            if "encode" in kinds]
  for kind, size, w in cells:
    n = args.num_images if kind == "decode" else min(args.encode_images,
                                                     args.num_images)
    if not results.todo((kind, size, w, n)):
      continue
    root = root or build(args.data_dir, args.num_images)
    if kind == "decode":
      row = measure_decode(root, size, w, batch_size=args.batch_size,
                           prefetch=args.prefetch, repeats=args.repeats)
      row["batch_size"] = args.batch_size
      line = (f"{row['images_per_s']:7.1f} images/s (steady "
              f"{row['steady_images_per_s'] or 0:7.1f})")
    else:
      row = measure_encode(root, size, w, num_images=n, blocks=blocks,
                           batch_size=args.encode_batch_size,
                           prefetch=args.prefetch)
      row.update(batch_size=args.encode_batch_size, ae_blocks=list(blocks))
      line = (f"waits {100 * row['wait_share']:5.1f}% of "
              f"{row['seconds']:.1f} s (steady "
              f"{100 * row['steady_wait_share']:5.1f}%)")
    results.append({"cell": kind, "size": size, "workers": w,
                    "num_images": n, "prefetch": args.prefetch,
                    "source_images": args.num_images,
                    "machine": harness.machine(),
                    "backend": jax.default_backend(),
                    "date": time.strftime("%Y-%m-%d"), **row})
    print(f"{kind:6s} {size:4d} px, {w} workers: {line}", flush=True)


if __name__ == "__main__":
  main()
