"""Per-class k-means speed: pqd_jax.quantize against its peers.

Same float32 data for every method, one init each, median of warm runs,
compile time reported apart, and the distortion (mean squared distance to the
nearest centroid, recomputed in float64 by one evaluator) beside every time.

Each finished (workload, method) cell is appended to a JSON-lines file and
skipped on a re-run, so a long run can be resumed. ``--report`` prints the
markdown tables recorded in ``benchmarks/RESULTS.md``.

  python benchmarks/quantize_speed.py                  # all workloads
  python benchmarks/quantize_speed.py --workloads W1 --repeats 2
  python benchmarks/quantize_speed.py --report
  python benchmarks/quantize_speed.py --summary --out=r1.jsonl,r2.jsonl,r3.jsonl

``--summary`` reads the results files of separate runs and prints the
in-memory targets of the quantization issue, one line per workload: the
median over runs of pqd_lloyd's wall time over faiss's (measured side by
side in each run), pqd_lloyd's distortion over scikit-learn's (from any run
that has scikit-learn's cell) and the per-iteration time over the floor
(both the best of their repeats, as the machine is shared and noisy; the
medians are printed beside).
"""

import argparse
import os
import platform
import time

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))

import harness  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import pqd_jax  # noqa: E402

WORKLOADS = {
    "W1": dict(c=10, n=6000, d=64, k=10),
    "W2": dict(c=10, n=6000, d=196, k=50),
    "W3": dict(c=100, n=1300, d=256, k=10),
    "W4": dict(c=10, n=6000, d=1024, k=100),
    # The ImageNet latent at 512 px (64×64×4), an ImageNet class's size.
    "W5": dict(c=10, n=1300, d=16384, k=10),
    "W5-K50": dict(c=10, n=1300, d=16384, k=50),
}
METHODS = ("sklearn_kmeans", "sklearn_minibatch_d4m", "faiss", "ott_kmeans",
           "pqd_lloyd", "pqd_clvq", "pqd_d4m")
TOL = 1e-4
# The in-memory targets: at most faiss's time, at most 1.005× scikit-learn's
# distortion, an iteration within 2.5× the floor.
TARGET_VS_FAISS = 1.0
TARGET_DISTORTION = 1.005
TARGET_PER_ITERATION = 2.5
MAX_ITER = 100
DEFAULT_OUT = os.path.join(harness.RESULTS_DIR, "quantize_speed.jsonl")


def make_data(c, n, d, seed=0):
  """Per-class 30-component Gaussian mixtures with anisotropic noise.

  Returns:
    ``[c, n, d]`` float32.
  """
  gen = np.random.default_rng(seed)
  out = np.empty((c, n, d), np.float32)
  for i in range(c):
    center = gen.normal(0, 0.5, d)
    means = center + gen.normal(0, 0.6, (30, d))
    mix = gen.dirichlet(np.full(30, 2.0))
    comp = gen.choice(30, n, p=mix)
    factor = gen.normal(0, 1, (8, d)) / np.sqrt(8)
    scales = np.exp(gen.uniform(np.log(0.3), 0.0, d))
    noise = gen.normal(size=(n, 8)) @ factor + gen.normal(size=(n, d)) * scales
    out[i] = (means[comp] + 0.5 * noise)[gen.permutation(n)]
  return out


def distortion64(x, centroids):
  """Mean squared distance to the nearest centroid, float64, per class."""
  res = []
  for xc, cc in zip(x, centroids, strict=True):
    xc = xc.astype(np.float64)
    cc = np.asarray(cc, np.float64).reshape(cc.shape[0], -1)
    d = ((xc * xc).sum(1)[:, None] - 2 * xc @ cc.T + (cc * cc).sum(1)[None])
    res.append(np.maximum(d.min(1), 0).mean())
  return float(np.mean(res))


def run_sklearn_kmeans(x, k, seed):
  from sklearn.cluster import KMeans
  cents, iters = [], []
  for xc in x:
    km = KMeans(k, init="k-means++", n_init=1, max_iter=MAX_ITER, tol=TOL,
                algorithm="lloyd", random_state=seed).fit(xc)
    cents.append(km.cluster_centers_)
    iters.append(km.n_iter_)
  return np.stack(cents), iters


def run_sklearn_minibatch_d4m(x, k, seed):
  """D4M's use: partial_fit on consecutive batches of K points, one pass."""
  from sklearn.cluster import MiniBatchKMeans
  cents, iters = [], []
  for xc in x:
    km = MiniBatchKMeans(n_clusters=k, random_state=seed, batch_size=k,
                         n_init="auto")
    calls = 0
    for s in range(0, len(xc) - k + 1, k):
      km.partial_fit(xc[s:s + k])
      calls += 1
    km.predict(xc)  # the recount pass (masses, distortion)
    cents.append(km.cluster_centers_)
    iters.append(calls)
  return np.stack(cents), iters


def run_faiss(x, k, seed):
  import faiss
  faiss.omp_set_num_threads(os.cpu_count())
  cents, iters = [], []
  for xc in x:
    km = faiss.Kmeans(xc.shape[1], k, niter=MAX_ITER, seed=seed,
                      max_points_per_centroid=xc.shape[0], verbose=False)
    km.cp.init_method = faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS
    km.cp.early_stop_threshold = TOL
    km.train(np.ascontiguousarray(xc))
    km.index.search(xc, 1)  # the recount pass
    cents.append(km.centroids.copy())
    iters.append(len(km.iteration_stats))
  return np.stack(cents), iters


def make_ott(x, k, seed):
  from ott.tools import k_means
  xj = jnp.asarray(x)
  var = jnp.mean(jnp.var(xj, axis=1), axis=-1)  # sklearn's tol scaling
  keys = jax.random.split(jax.random.key(seed), x.shape[0])

  @jax.jit
  def fn(xj, keys, tols):
    return jax.vmap(lambda xc, key, tol: k_means.k_means(
        xc, k=k, n_init=1, rng=key, tol=tol, max_iterations=MAX_ITER))(
            xj, keys, tols)

  def run():
    out = fn(xj, keys, TOL * var)
    jax.block_until_ready(out.centroids)
    return np.asarray(out.centroids), np.asarray(out.iteration).tolist()
  return run


def make_pqd(x, k, seed, method):
  c, n, d = x.shape
  flat = x.reshape(c * n, d)
  labels = np.repeat(np.arange(c), n)

  def run():
    out = pqd_jax.quantize(flat, labels, k, method=method, tol=TOL,
                           num_iters=MAX_ITER if method == "lloyd" else 10,
                           rng=jax.random.key(seed), batch_size=1024)
    jax.block_until_ready(out.centroids)
    return np.asarray(out.centroids), np.asarray(out.iterations).tolist()
  return run


def per_iteration_ms(x, k, seed):
  """Slope of pqd lloyd wall time between 1 and 11 assignment passes.

  Returns:
    ``{"per_iter_ms": slope of the medians, "per_iter_best_ms": of the
    fastest runs}`` (5 runs each).
  """
  c, n, d = x.shape
  seconds = harness.lloyd_seconds_per_iteration(
      x.reshape(c * n, d), np.repeat(np.arange(c), n), k, seed=seed,
      repeats=5)
  return {"per_iter_ms": 1e3 * seconds.median,
          "per_iter_best_ms": 1e3 * seconds.best}


def run_cell(name, spec, method, x, repeats, seed):
  k = spec["k"]
  if method == "ott_kmeans":
    fn = make_ott(x, k, seed)
  elif method.startswith("pqd_"):
    fn = make_pqd(x, k, seed, method[4:])
  else:
    runner = globals()[f"run_{method}"]
    fn = lambda: runner(x, k, seed)
  timing = harness.time_calls(fn, repeats)
  cents, iters = timing.result
  wall = timing.median
  is_jax = method == "ott_kmeans" or method.startswith("pqd_")
  return {
      "workload": name, "method": method, **spec, "wall_s": wall,
      "times_s": timing.times,
      "compile_s": (timing.first - wall) if is_jax else None,
      "iters_mean": float(np.mean(iters)), "iters_max": int(np.max(iters)),
      "distortion": distortion64(x, cents),
  }


def report(rows, limits_rows):
  by_wl = {}
  for r in rows:
    by_wl.setdefault(r["workload"], {})[r["method"]] = r
  lim = {r["workload"]: r for r in limits_rows}
  lines = []
  for wl, spec in WORKLOADS.items():
    if wl not in by_wl:
      continue
    cells = by_wl[wl]
    # The reference of the ratios: scikit-learn's KMeans, or in a run
    # without it D4M's use of MiniBatchKMeans.
    ref_name = next((m for m in ("sklearn_kmeans", "sklearn_minibatch_d4m")
                     if m in cells), None)
    ref = cells.get(ref_name)
    lines.append(f"\n### {wl}: C={spec['c']} N_c={spec['n']} D={spec['d']} "
                 f"K={spec['k']}\n")
    lines.append("| method | wall (median) | compile | iterations mean / "
                 f"max | distortion | / {ref_name} | time / {ref_name} |")
    lines.append("|---|---|---|---|---|---|---|")
    for m in METHODS:
      if m not in cells:
        continue
      r = cells[m]
      comp = f"{r['compile_s']:.2f} s" if r["compile_s"] is not None else "-"
      rel_q = r["distortion"] / ref["distortion"] if ref else float("nan")
      rel_t = r["wall_s"] / ref["wall_s"] if ref else float("nan")
      lines.append(
          f"| {m} | {r['wall_s']:.3f} s | {comp} | {r['iters_mean']:.1f} / "
          f"{r['iters_max']} | {r['distortion']:.4f} | {rel_q:.4f} | "
          f"{rel_t:.2f}x |")
    if wl in lim:
      li = lim[wl]
      lines.append(
          f"\nPer Lloyd iteration (all classes, init excluded, slope 1→11 "
          f"passes, median runs): pqd_lloyd {li['per_iter_ms']:.1f} ms; floor "
          f"{li['floor_ms']:.1f} ms (max of 2·C·N·D·K = "
          f"{li['flops'] / 1e9:.2f} GFLOP at the measured "
          f"{li['peak_gflops']:.0f} GFLOP/s, and X = {li['bytes'] / 2**20:.0f}"
          f" MiB at {li['copy_gbs']:.0f} GB/s) → "
          f"{li['per_iter_ms'] / li['floor_ms']:.1f}× the floor.")
  return "\n".join(lines)


def summary(runs, limits_runs):
  """The in-memory targets over several runs, one line per workload.

  Args:
    runs: per run, its rows (``{(workload, method): row}``).
    limits_runs: per run, its limits rows (``{workload: row}``).

  Returns:
    The summary text.
  """
  def mark(ok):
    return "met" if ok else "MISSED"

  lines = [f"pqd_lloyd against the in-memory targets (median of {len(runs)} "
           "runs)"]
  for wl in WORKLOADS:
    vs_faiss = [r[(wl, "pqd_lloyd")]["wall_s"] / r[(wl, "faiss")]["wall_s"]
                for r in runs if (wl, "pqd_lloyd") in r and (wl, "faiss") in r]
    quality = [r[(wl, "pqd_lloyd")]["distortion"]
               / r[(wl, "sklearn_kmeans")]["distortion"]
               for r in runs
               if (wl, "pqd_lloyd") in r and (wl, "sklearn_kmeans") in r]
    # The floor is the best of its runs; so is the iteration where the row
    # has it (older rows: the median).
    per_iter = [lim[wl].get("per_iter_best_ms", lim[wl]["per_iter_ms"])
                / lim[wl]["floor_ms"] for lim in limits_runs if wl in lim]
    per_iter_median = [lim[wl]["per_iter_ms"] / lim[wl]["floor_ms"]
                       for lim in limits_runs if wl in lim]
    if not (vs_faiss or quality or per_iter):
      continue
    parts = []
    if vs_faiss:
      ratio = float(np.median(vs_faiss))
      parts.append(f"time / faiss {ratio:.2f} (runs "
                   f"{', '.join(f'{v:.2f}' for v in vs_faiss)}; target <= "
                   f"{TARGET_VS_FAISS:g}: {mark(ratio <= TARGET_VS_FAISS)})")
    if quality:
      ratio = float(np.median(quality))
      parts.append(f"distortion / sklearn {ratio:.4f} (target <= "
                   f"{TARGET_DISTORTION}: {mark(ratio <= TARGET_DISTORTION)})")
    if per_iter:
      ratio = float(np.median(per_iter))
      parts.append(f"iteration / floor {ratio:.2f} (runs "
                   f"{', '.join(f'{v:.2f}' for v in per_iter)}; medians of "
                   f"each run's repeats "
                   f"{', '.join(f'{v:.2f}' for v in per_iter_median)}; "
                   f"target <= {TARGET_PER_ITERATION}: "
                   f"{mark(ratio <= TARGET_PER_ITERATION)})")
    lines.append(f"{wl}: " + "; ".join(parts))
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workloads", default=",".join(WORKLOADS))
  parser.add_argument("--methods", default=",".join(METHODS))
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=DEFAULT_OUT)
  parser.add_argument("--report", action="store_true")
  parser.add_argument("--summary", action="store_true",
                      help="the targets over the runs in --out (comma-"
                      "separated results files)")
  args = parser.parse_args(argv)
  if args.summary:
    paths = args.out.split(",")
    print(summary(
        [harness.finished_rows(p, ("workload", "method")) for p in paths],
        [harness.finished_rows(p.replace(".jsonl", "_limits.jsonl"),
                               "workload") for p in paths]))
    return
  results = harness.Results(args.out, key=("workload", "method"))
  limits_results = harness.Results(
      args.out.replace(".jsonl", "_limits.jsonl"), key="workload")
  if args.report:
    print(report(results.rows.values(), limits_results.rows.values()))
    return
  print(f"# {platform.node()} {harness.machine()} jax={jax.__version__} "
        f"devices={jax.devices()}")
  limits = None
  for name in args.workloads.split(","):
    spec = WORKLOADS[name]
    x = make_data(spec["c"], spec["n"], spec["d"], seed=args.seed)
    for method in args.methods.split(","):
      if not results.todo((name, method)):
        continue
      row = run_cell(name, spec, method, x, args.repeats, args.seed)
      row["date"] = time.strftime("%Y-%m-%d")
      results.append(row)
      print(f"{name} {method}: {row['wall_s']:.3f} s, distortion "
            f"{row['distortion']:.4f}, iters {row['iters_mean']:.1f}",
            flush=True)
    if name not in limits_results:
      limits = limits or harness.machine_limits()
      flops = 2 * spec["c"] * spec["n"] * spec["d"] * spec["k"]
      nbytes = 4 * spec["c"] * spec["n"] * spec["d"]
      peak = max(limits["numpy_gflops"], limits["xla_gflops"])
      floor_ms = max(flops / peak / 1e6, nbytes / limits["copy_gbs"] / 1e6)
      row = {"workload": name, **per_iteration_ms(x, spec["k"], args.seed),
             "floor_ms": floor_ms, "flops": flops,
             "bytes": nbytes, "peak_gflops": peak, **limits,
             "date": time.strftime("%Y-%m-%d")}
      limits_results.append(row)
      print(f"{name} per-iteration {row['per_iter_ms']:.1f} ms, floor "
            f"{floor_ms:.1f} ms", flush=True)

if __name__ == "__main__":
  main()
