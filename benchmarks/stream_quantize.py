"""Streaming quantization at ImageNet shape, with bounded memory.

The workload of the scale-out issue: 1000 classes × 1300 points, D = 4096
(SD latents 4×32×32 of 256-px images), K = 10, float16 on disk in the
pipeline's latents format (one ``.npy`` per class, 10.6 GB). Cells, each
appended to a JSON-lines file when it finishes and skipped on a re-run:

- ``limits``: this machine's float32 matmul rate (numpy and XLA) and copy
  bandwidth, the floors the throughputs are compared with (named with the
  ``--suffix``, so that a run's summary uses limits measured with it);
- ``data``: writes the synthetic latents (resumable per class file);
- ``stream_full``: ``pqd_jax.quantize_stream`` over all of it in a child
  process: wall time per pass, peak RSS, points·passes/s and the matmul floor;
- ``stream_100`` / ``minibatch_100``: the first 100 classes through
  ``quantize_stream`` and through scikit-learn's ``MiniBatchKMeans`` per class
  (``partial_fit`` over batches of the same rows for the same passes, then
  a ``score`` recount), in child processes, for a ratio measured in one run;
- ``lloyd_efficiency``: in-memory ``pqd_jax.quantize`` (Lloyd) per-iteration
  time on 10 classes of the data at K = 50, against the matmul floor (the
  number behind the TPU estimate in ``benchmarks/RESULTS.md``).

  python benchmarks/stream_quantize.py            # every cell
  python benchmarks/stream_quantize.py --classes 20 --out /tmp/s.jsonl
"""

import argparse
import json
import os
import subprocess
import sys
import time

import harness
import numpy as np

from pqd_jax import workdir
from pqd_jax.autoencoder import latents

ROOT = os.path.dirname(harness.BENCHMARKS_DIR)
DEFAULT_OUT = os.path.join(harness.RESULTS_DIR, "stream_quantize.jsonl")
DEFAULT_DATA = os.path.join(harness.CACHE_DIR, "stream_imagenet_shaped")
LATENT_SHAPE = (32, 32, 4)  # D = 4096
K = 10
# Rows per chunk of the reader; None is latents.stream's default (chunks of
# at most latents.CHUNK_BYTES, recorded as chunk_bytes).
CHUNK = None
BATCH = 1024


def class_points(c: int, n: int, d: int) -> np.ndarray:
  """Class ``c``: a 30-component Gaussian mixture with a low-rank part.

  Returns:
    ``[n, d]`` float16.
  """
  gen = np.random.default_rng([7, c])
  center = gen.normal(0, 0.5, d).astype(np.float32)
  means = center + gen.normal(0, 0.6, (30, d)).astype(np.float32)
  comp = gen.choice(30, n, p=gen.dirichlet(np.full(30, 2.0)))
  factor = (gen.normal(0, 1, (8, d)) / np.sqrt(8)).astype(np.float32)
  noise = gen.standard_normal((n, 8), np.float32) @ factor
  noise += gen.standard_normal((n, d), np.float32) * 0.7
  return (means[comp] + 0.5 * noise).astype(np.float16)


def write_data(directory: str, classes: int, n: int,
               latent_shape: tuple[int, ...] = LATENT_SHAPE) -> dict:
  """The latents artefact (index last); finished class files are kept."""
  os.makedirs(directory, exist_ok=True)
  d = int(np.prod(latent_shape))
  t0 = time.perf_counter()
  for c in range(classes):
    path = os.path.join(directory, f"class_{c:05d}.npy")
    if os.path.exists(path):
      continue
    points = class_points(c, n, d).reshape((n,) + latent_shape)
    workdir.save_atomic(path, lambda tmp, x=points: np.save(tmp, x))
  workdir.write_json(os.path.join(directory, "index.json"), {
      "class_names": [f"c{c}" for c in range(classes)],
      "latent_shape": list(latent_shape), "dtype": "float16",
      "counts": [n] * classes, "scaling_factor": 0.18215})
  size = sum(os.path.getsize(os.path.join(directory, f))
             for f in os.listdir(directory) if f.endswith(".npy"))
  return {"seconds": time.perf_counter() - t0, "bytes": size,
          "classes": classes, "points_per_class": n}


_LIMITS = """
import json
import harness
print(json.dumps(harness.machine_limits()))
"""

_STREAM = """
import json, resource, sys, time
import jax, numpy as np
import pqd_jax
from pqd_jax.autoencoder import latents
directory, classes, passes, batch, held = sys.argv[1], int(sys.argv[2]), \\
    int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
base = latents.stream(directory, chunk=%(chunk)s)
marks = []
def make_batches():
  marks.append(time.perf_counter())
  for x, y in base():
    # The first ``classes`` classes (labels ascend in a class-major
    # stream): a chunk may run across class files.
    n = int(np.searchsorted(y, classes))
    if n:
      yield x[:n], y[:n]
    if n < len(y):
      return
runs = []
for _ in range(2):  # the first run compiles, the second reuses it all
  marks.clear()
  t0 = time.perf_counter()
  out = pqd_jax.quantize_stream(make_batches, %(k)d, num_passes=passes,
                                batch_size=batch, held_batches=held,
                                rng=jax.random.key(0))
  jax.block_until_ready(out.centroids)
  t1 = time.perf_counter()
  runs.append((t1 - t0, np.diff(marks + [t1]).tolist()))
counts = np.asarray(out.counts)
print(json.dumps({
    "seconds": runs[0][0],
    "pass_seconds": runs[0][1],
    "warm_seconds": runs[1][0],
    "warm_pass_seconds": runs[1][1],
    "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    "counts_ok": bool((counts.sum(1) == %(n)d).all()),
    "mean_distortion": float(np.mean(np.asarray(out.distortion)))}))
"""

_MINIBATCH = """
import json, resource, sys, time
import numpy as np
from sklearn.cluster import MiniBatchKMeans
from pqd_jax.autoencoder import latents
directory, classes, passes, batch = sys.argv[1], int(sys.argv[2]), \\
    int(sys.argv[3]), int(sys.argv[4])
index = latents.read_index(directory)
t0 = time.perf_counter()
dist = []
for c in range(classes):
  arr = np.load(f"{directory}/class_{c:05d}.npy", mmap_mode="r")
  flat = lambda s: np.asarray(arr[s:s + batch], np.float32).reshape(
      -1, arr[0].size)
  km = MiniBatchKMeans(n_clusters=%(k)d, batch_size=batch, random_state=0,
                       n_init=1, init="k-means++", init_size=10 * %(k)d)
  for _ in range(passes):
    for s in range(0, arr.shape[0], batch):
      km.partial_fit(flat(s))
  sse = 0.0
  for s in range(0, arr.shape[0], batch):  # the recount pass
    x = flat(s)
    sse += float(-km.score(x))
  dist.append(sse / arr.shape[0])
print(json.dumps({
    "seconds": time.perf_counter() - t0,
    "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    "mean_distortion": float(np.mean(dist))}))
"""

_LLOYD = """
import json, sys
import numpy as np
import harness
directory, classes, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
z = np.concatenate([np.load(f"{directory}/class_{c:05d}.npy")
                    for c in range(classes)]).astype(np.float32)
y = np.repeat(np.arange(classes), len(z) // classes)
per_iter = harness.lloyd_seconds_per_iteration(z, y, k, repeats=2).median
print(json.dumps({"seconds_per_iteration": per_iter, "points": len(z),
                  "dim": int(np.prod(z.shape[1:])), "k": k}))
"""


def child(script: str, *args, **subs) -> dict:
  # The scripts import pqd_jax from this checkout, and harness.
  env = dict(os.environ,
             PYTHONPATH=os.pathsep.join([ROOT, harness.BENCHMARKS_DIR]))
  proc = subprocess.run([sys.executable, "-c", script % subs if subs
                         else script, *map(str, args)],
                        capture_output=True, text=True, env=env, cwd=ROOT)
  if proc.returncode:
    raise RuntimeError(proc.stderr[-3000:])
  return json.loads(proc.stdout.strip().splitlines()[-1])


def median_run(script: str, repeats: int, *args, **subs) -> dict:
  """The run of median wall time among ``repeats`` child runs.

  Returns:
    That run's row, with every run's ``seconds`` in ``runs_seconds``.
  """
  rows = sorted((child(script, *args, **subs) for _ in range(repeats)),
                key=lambda row: row["seconds"])
  return {**rows[len(rows) // 2],
          "runs_seconds": [row["seconds"] for row in rows]}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--classes", type=int, default=1000)
  parser.add_argument("--points", type=int, default=1300)
  parser.add_argument("--subset", type=int, default=100,
                      help="classes of the stream-vs-MiniBatchKMeans cells")
  parser.add_argument("--passes", type=int, default=1,
                      help="CLVQ passes (MiniBatchKMeans: the same)")
  parser.add_argument("--side", type=int, default=LATENT_SHAPE[0],
                      help="latent side: 32 (D = 4,096, 256-px images) or "
                      "64 (D = 16,384, SD's 512 px); cells and data of "
                      "another side than 32 are named with their D")
  parser.add_argument("--data", default=DEFAULT_DATA)
  parser.add_argument("--out", default=DEFAULT_OUT)
  parser.add_argument("--suffix", default="",
                      help="appended to the stream cells' names (a re-run "
                      "after a code change keeps the old rows)")
  parser.add_argument("--held_batches", type=int, default=4,
                      help="quantize_stream's held_batches (0: the recount "
                      "as a pass of its own)")
  parser.add_argument("--repeats", type=int, default=1,
                      help="runs of each subset cell (each in a fresh child "
                      "process); the row is the median run")
  parser.add_argument("--cells", default="limits,data,stream_full,"
                      "stream_subset,minibatch_subset,lloyd_efficiency")
  args = parser.parse_args(argv)
  results = harness.Results(args.out)
  shape = (args.side, args.side, LATENT_SHAPE[2])
  d = int(np.prod(shape))
  dim = "" if shape == LATENT_SHAPE else f"_d{d}"
  tag = f"{args.classes}x{args.points}{dim}"
  data_dir = f"{args.data}_{tag}"
  n = args.classes * args.points
  subs = dict(chunk=CHUNK, k=K, n=args.points)
  for cell in args.cells.split(","):
    name = {"limits": f"limits{args.suffix}", "data": f"data_{tag}",
            "stream_full": f"stream_{tag}_p{args.passes}{args.suffix}",
            "stream_subset": f"stream_{args.subset}x{args.points}{dim}"
                             f"_p{args.passes}{args.suffix}",
            "minibatch_subset": f"minibatch_{args.subset}x{args.points}"
                                f"{dim}_p{args.passes}{args.suffix}",
            "lloyd_efficiency": f"lloyd_10x1300{dim}_k50"}[cell]
    if not results.todo(name):
      continue
    if cell not in ("limits", "data") and not os.path.exists(
        os.path.join(data_dir, "index.json")):
      # The data cell is recorded but its files are gone (a new machine):
      # written again, the same data (seeded per class).
      write_data(data_dir, args.classes, args.points, shape)
    if cell == "limits":
      row = child(_LIMITS)
    elif cell == "data":
      row = write_data(data_dir, args.classes, args.points, shape)
    elif cell in ("stream_full", "stream_subset"):
      classes = args.classes if cell == "stream_full" else args.subset
      runs = 1 if cell == "stream_full" else args.repeats
      row = median_run(_STREAM, runs, data_dir, classes, args.passes, BATCH,
                       args.held_batches,
                       **subs)
      points = classes * args.points
      # Every pass (seeding, CLVQ, recount) computes K distances per point.
      row.update(points=points, dim=d, k=K, batch=BATCH, chunk=CHUNK,
                 chunk_bytes=latents.CHUNK_BYTES if CHUNK is None else None,
                 held_batches=args.held_batches,
                 passes_total=args.passes + 2,
                 points_passes_per_s=points * (args.passes + 2)
                 / row["seconds"],
                 flops_per_point_pass=2 * K * d)
    elif cell == "minibatch_subset":
      row = median_run(_MINIBATCH, args.repeats, data_dir, args.subset,
                       args.passes, BATCH, **subs)
      row.update(points=args.subset * args.points, batch=BATCH)
    else:
      row = child(_LLOYD, data_dir, 10, 50)
    row = results.append({
        "cell": name, **row, "total_points": n,
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": harness.machine()})
    print(json.dumps(row), flush=True)
  print(summary(results, f"{args.subset}x{args.points}{dim}"
                f"_p{args.passes}{args.suffix}", f"limits{args.suffix}"))


def summary(results: harness.Results, tag: str, limits_cell: str) -> str:
  """The subset cells of ``tag`` against the stream targets, one screen.

  The floor comes from ``limits_cell``, the machine's limits measured in the
  same run as the cells (the same ``--suffix``).
  """
  rows = results.rows
  stream, sk = rows.get(f"stream_{tag}"), rows.get(f"minibatch_{tag}")
  limits = rows.get(limits_cell)
  if not (stream and sk and limits):
    return (f"summary: cells stream_{tag}, minibatch_{tag} and "
            f"{limits_cell} needed")
  n, d = stream["points"], stream["dim"]
  matmul = stream["flops_per_point_pass"] * n / limits["xla_gflops"] / 1e9
  read = 2 * n * d / limits["copy_gbs"] / 1e9  # float16 read once
  floor = max(matmul, read)
  # A class-major stream's recount is folded into the last CLVQ pass: two
  # passes' distances for one read of the data.
  folded = len(stream["pass_seconds"]) == 2
  folded_floor = max(2 * matmul, read)

  def passes(seconds):
    seeding, clvq = seconds[:2]
    pass_floor = folded_floor if folded else floor
    line = (f"CLVQ pass{' + recount' if folded else ''} {clvq:.3f} s, "
            f"{100 * pass_floor / clvq:.1f}% of its floor "
            f"{pass_floor:.3f} s (target >= 25%); seeding pass "
            f"{seeding:.2f} s = {seeding / clvq:.2f} of it (target <= 2)")
    if not folded:
      line += f"; recount pass {seconds[2]:.2f} s"
    return line

  lines = [
      f"stream_{tag} against the targets (median of "
      f"{len(stream.get('runs_seconds', [0]))} runs):",
      f"  wall {stream['seconds']:.2f} s vs MiniBatchKMeans "
      f"{sk['seconds']:.2f} s: {sk['seconds'] / stream['seconds']:.2f}x "
      "faster (target >= 3x)",
      f"  distortion {stream['mean_distortion']:.1f} vs "
      f"{sk['mean_distortion']:.1f} (target <=)",
      f"  {passes(stream['pass_seconds'])}"]
  if "warm_seconds" in stream:  # a second call in the same process
    lines += [
        f"  compiled (a second call): wall {stream['warm_seconds']:.2f} s, "
        f"{sk['seconds'] / stream['warm_seconds']:.2f}x faster;",
        f"    {passes(stream['warm_pass_seconds'])}"]
  lines += [
      f"  peak RSS {stream['peak_rss_gb']:.2f} GB (target <= 4)"]
  return "\n".join(lines)


if __name__ == "__main__":
  main()
