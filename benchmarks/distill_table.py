"""The fair distillation table: every method against random real images.

The protocol of ``../shared/reference/EVALUATION.md`` ("A fair table"), on
the pipeline's Fashion-MNIST config:

- every row has the same teacher, temperature, augmentation and
  learning-rate policy and sees the same number of teacher-labelled
  training images (a parameterised-storage step takes a quarter as many
  mosaics, or a quarter of the steps when the batch does not split), at
  one of two student budgets: ``A`` (the papers'
  300 epochs of the set: IPC 1 300 steps of 10, IPC 10 300 of 100, IPC 50
  1,500 of 100) or ``B`` (2,000 steps of 100 at every IPC; at IPC 1 a batch
  holds 10 augmented views of each image, ``student.fill_batch``);
- each seed redraws the set (the random subset, the k-means initialisation,
  the prior's noise: ``config.seed``) and the student
  (``config.student.seed``); the table reports paired differences against
  random per seed, their mean and 95% t-interval;
- the test accuracy at 8 points of every student
  (``config.student.eval_points``, on a fixed class-balanced 2,000 of the
  test images); the table reports the whole test split's after the last
  step;
- the compute-matched ceiling (``whole``: the whole training split with the
  same KD recipe and steps) and the hard-label teacher (the whole split,
  hard labels: the teacher's own accuracy);
- per row IOR (minus random), HLR (the teacher's accuracy minus the set's
  under hard labels, from ``--labels=hard`` cells), LRS (DD-Ranking's, on
  fractions) and gap closed = (set − random) / (ceiling − random). As in
  DD-Ranking, the hard-label evaluation is one fixed protocol whatever the
  soft-label budget: CE + DSA for budget A's steps (:data:`HARD_BUDGET`),
  and both budgets' HLR and LRS use those cells.

Cells ``<method>_ipc<IPC>_<budget>_<labels>_seed<seed>``, one student each,
appended to ``--out`` when done and skipped on a re-run; each is a pipeline
workdir under ``--workroot`` (a killed cell resumes its training). The
autoencoder, latents, prior and teacher are shared with
``distill_accuracy.py`` through ``<workroot>/_base``. Several processes may
run at once on one ``--out``: each claims a cell before running it
(``<workroot>/<cell>.claim``; a dead process's claim is taken over), so
two processes, one per core, share the cells as they go.

  taskset -c 0 python benchmarks/distill_table.py --budget=A &
  taskset -c 1 python benchmarks/distill_table.py --budget=A &
  python benchmarks/distill_table.py --budget=A --table-only
"""

import argparse
import math
import os
import time

import distill_accuracy
import harness
import numpy as np
from scipy import stats

from pqd_jax import pipeline, workdir
from pqd_jax.data import splits

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "fashion_mnist_fair.jsonl")
TABLE = os.path.join(HERE, "results", "fashion_mnist.md")

BUDGETS = {
    "A": {1: (300, 10), 10: (300, 100), 50: (1500, 100)},
    "B": {1: (2000, 100), 10: (2000, 100), 50: (2000, 100)},
}
# The one student budget of the hard-label (HLR) cells.
HARD_BUDGET = "A"
BUDGET_NAMES = {"A": "the papers' 300 epochs of the set",
                "B": "2,000 steps of 100 at every IPC"}
IPCS = (1, 10, 50)
EVAL_POINTS = 8
# The curves' test images (a fixed class-balanced subset): a whole-split
# evaluation costs about 50 training steps of 100 on a ConvNet-3.
EVAL_IMAGES = 2000

# Candidates per centroid: real images (typical, spread), samples (pool).
NEAREST, SAMPLES = 10, 4
# Each method: what its set is (the table's legend).
METHODS = {
    "random": "IPC random real images per class, uniform weights",
    "d4m": "D4M: k-means by scikit-learn's MiniBatchKMeans updates "
           "(quantize.method=d4m), centroids decoded through the prior, "
           "uniform weights",
    "ddoq": "DDOQ: Lloyd centroids decoded through the prior, cell-mass "
            "weights",
    "ddoq-uniform": "`ddoq`'s images with uniform weights (the weights' "
                    "effect alone)",
    "nearest": "the real image nearest each Lloyd centroid, cell-mass "
               "weights",
    "typical": f"the real image the teacher finds most typical of its class "
               f"among the {NEAREST} nearest each Lloyd centroid, cell-mass "
               "weights",
    "spread": f"the real image farthest from its class's mean among the "
              f"{NEAREST} nearest each Lloyd centroid, cell-mass weights",
    "pool": f"the teacher's most typical of {SAMPLES} img2img samples of "
            "each Lloyd centroid, cell-mass weights",
    "random-f2": "parameterised storage: each stored image a 2×2 mosaic of "
                 "four random real half-side images",
    "ddoq-f2": "parameterised storage: four decoded centroids (IPC × 4 "
               "cells) per stored image",
    "nearest-f2": "parameterised storage: the real images nearest IPC × 4 "
                  "centroids, four per stored image",
    "typical-f2": "parameterised storage: `typical`'s images of IPC × 4 "
                  "centroids, four per stored image",
    "whole": "the ceiling: the whole training split, the same KD recipe "
             "and steps",
}
DEFAULT_METHODS = tuple(METHODS)
BASELINE, CEILING = "random", "whole"
# Gap closed is reported when the ceiling beats random by at least this.
GAP_MIN = 0.01


def budget_of(budget: str, ipc: int) -> tuple[int, int]:
  """``(steps, batch)`` of a budget at an IPC (past its last IPC: the last)."""
  table = BUDGETS[budget]
  return table.get(ipc, table[max(table)])


def cell_name(method: str, ipc: int, budget: str, labels: str,
              seed: int) -> str:
  """``<method>_ipc<IPC>_<budget>_<labels>_seed<seed>``."""
  return f"{method}_ipc{ipc}_{budget}_{labels}_seed{seed}"


def smallest_class(base) -> int:
  """The training split's smallest class size (the ``whole`` cells' IPC)."""
  labels = splits.Splits(base).source("train").labels
  return int(np.bincount(labels).min())


def twin_row(rows: dict, digest: str) -> dict | None:
  """A finished row whose config has ``digest``: the same run, its result.

  Cells can share a config (at budget B every IPC trains the ``whole``
  ceiling with the same steps and batch); the pipeline is deterministic, so
  such a cell takes its twin's row instead of training again.
  """
  for row in rows.values():
    if row.get("config_digest") == digest:
      return row
  return None


def siblings(method: str, ipc: int, seed: int, cell: str) -> list[str]:
  """The cells with ``cell``'s set and another student (budget, labels)."""
  return [cell_name(method, ipc, b, lab, seed) for b in BUDGETS
          for lab in ("soft", "hard")
          if cell_name(method, ipc, b, lab, seed) != cell]


def cell_config(base, method: str, ipc: int, budget: str, labels: str,
                seed: int, *, whole_ipc: int, steps_scale: float = 1.0):
  """The pipeline config of one cell.

  Args:
    base: the benchmark's pipeline config.
    method: one of :data:`METHODS`.
    ipc: images per class (the budget's row; ``whole`` trains on the whole
      split with this IPC's steps and batch).
    budget: ``"A"`` or ``"B"``.
    labels: ``"soft"`` (online KD) or ``"hard"`` (CE with DSA).
    seed: the set's and the student's seed.
    whole_ipc: the smallest class's size (``whole``'s IPC).
    steps_scale: multiplies the budget's steps (tests).

  Raises:
    ValueError: for an unknown method, budget or label type.
  """
  if method not in METHODS:
    raise ValueError(f"Unknown method {method!r}; expected one of "
                     f"{tuple(METHODS)}.")
  if budget not in BUDGETS or labels not in ("soft", "hard"):
    raise ValueError(f"Unknown budget {budget!r} or labels {labels!r}; "
                     f"expected one of {tuple(BUDGETS)} and soft|hard.")
  c = base.copy_and_resolve_references()
  c.ipc, c.seed = ipc, seed
  c.student.seed, c.student.num_seeds = seed, 1
  c.student.eval_points, c.student.eval_images = EVAL_POINTS, EVAL_IMAGES
  c.report.sweep_ks = ()
  name = method.removesuffix("-f2")
  if name != method:
    c.factor = 2
  if name in ("random", "whole"):
    c.baseline = "random"
    c.ipc = whole_ipc if name == "whole" else ipc
  elif name == "d4m":
    c.quantize.method, c.student.weights = "d4m", "uniform"
  elif name == "ddoq-uniform":
    c.student.weights = "uniform"
  elif name in ("nearest", "typical", "spread"):
    c.decode.images = "nearest"
  if name in ("typical", "spread", "pool"):
    c.decode.candidates = SAMPLES if name == "pool" else NEAREST
    c.decode.choose = "spread" if name == "spread" else "teacher"
  steps, batch = budget_of(budget, ipc)
  tiles = c.factor * c.factor  # training images per stored one
  if batch % tiles == 0:  # the same training images per step
    batch //= tiles
  else:  # the same training images in all: fewer steps
    steps = max(1, steps // tiles)
  c.student.num_epochs = 0
  c.student.num_steps = max(1, int(round(steps * steps_scale)))
  c.student.batch_size = batch
  c.student.fill_batch = True
  if labels == "hard":
    c.student.soft_labels = False
    c.student.flip, c.student.crop_scale = False, ()
    c.student.dsa, c.student.cutmix = True, False
  return c


def _flat(tree, prefix: str = "") -> dict:
  """``{"a.b": value}`` of a nested JSON dict."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def same_config(stored: dict, current, default) -> bool:
  """Whether a finished cell's config is the current one.

  A field the package added since the cell ran counts as the same when it
  is at its default (``default``: the package's config today), so that new
  options that keep behaviour do not void finished cells.

  Args:
    stored: the cell's config as JSON (its row's, or its workdir's).
    current: the config this run would use.
    default: the base config of the package.
  """
  old = _flat(stored)
  new = _flat(workdir.to_jsonable(current))
  base = _flat(workdir.to_jsonable(default))
  return set(old) <= set(new) and all(
      old[k] == v if k in old else base.get(k) == v for k, v in new.items())


def stored_config(rows: dict, workroot: str, cell: str) -> dict | None:
  """A finished cell's config: in its row, else its workdir's config.json."""
  if "config" in rows[cell]:
    return rows[cell]["config"]
  return workdir.read_json(os.path.join(workroot, cell, "config.json"))


def claim(workroot: str, cell: str) -> bool:
  """Claims ``cell`` for this process; False if a live process holds it.

  The claim is ``<workroot>/<cell>.claim`` made with ``O_EXCL`` and holding
  the claimer's pid; a claim whose process is gone is taken over.
  """
  path = os.path.join(workroot, f"{cell}.claim")
  for _ in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      try:
        with open(path) as f:
          pid = int(f.read().strip() or 0)
      except (OSError, ValueError):
        pid = 0
      if pid == os.getpid():
        return True
      if pid and _alive(pid):
        return False
      try:
        os.remove(path)
      except FileNotFoundError:
        pass
      continue
    with os.fdopen(fd, "w") as f:
      f.write(str(os.getpid()))
    return True
  return False


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def release(workroot: str, cell: str) -> None:
  """Removes this process's claim on ``cell``."""
  try:
    os.remove(os.path.join(workroot, f"{cell}.claim"))
  except FileNotFoundError:
    pass


def paired(values: list[float], baseline: list[float]) -> tuple[float, float]:
  """Mean of ``values − baseline`` (paired by seed) and its 95% half-width.

  The half-width is Student's t: ``t(0.975, n − 1) · sd / √n``; ``nan``
  for fewer than two pairs.
  """
  d = np.asarray(values, np.float64) - np.asarray(baseline, np.float64)
  if len(d) < 2:
    return float(d.mean()) if len(d) else math.nan, math.nan
  half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
  return float(d.mean()), float(half)


def lrs(ior: float, hlr: float, w: float = 0.5) -> float:
  """DD-Ranking's label-robust score from IOR and HLR given as fractions.

  ``α = w·IOR − (1 − w)·HLR``, ``LRS = (e^α − e^−1) / (e − e^−1)``.
  """
  alpha = w * ior - (1.0 - w) * hlr
  return (math.exp(alpha) - math.exp(-1.0)) / (math.e - math.exp(-1.0))


def by_seed(rows: dict, method: str, ipc: int, budget: str,
            labels: str = "soft") -> dict[int, float]:
  """``{seed: accuracy}`` of one method's finished cells."""
  return {r["seed"]: r["accuracy"] for r in rows.values()
          if r.get("method") == method and r.get("ipc") == ipc
          and r.get("budget") == budget and r.get("labels") == labels}


def summary(rows: dict, method: str, ipc: int, budget: str) -> dict | None:
  """One table entry: accuracy, paired difference, gap closed, IOR/HLR/LRS.

  Accuracies in percent. The differences use the seeds both the method and
  its reference have; ``None`` when the method has no finished cell.
  """
  mine = by_seed(rows, method, ipc, budget)
  if not mine:
    return None
  acc = np.asarray(list(mine.values())) * 100
  out = {"mean": float(acc.mean()),
         "std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
         "n": len(acc)}
  base = by_seed(rows, BASELINE, ipc, budget)
  common = sorted(set(mine) & set(base))
  if method != BASELINE and common:
    diff, half = paired([mine[s] for s in common], [base[s] for s in common])
    out.update(diff=100 * diff, half=100 * half, pairs=len(common))
    ceiling = by_seed(rows, CEILING, ipc, budget)
    if ceiling and method != CEILING:
      top = np.mean(list(ceiling.values())) - np.mean([base[s]
                                                        for s in common])
      # Undefined when the ceiling is within a point of random: the budget,
      # not the data, bounds the accuracy there.
      out["gap_closed"] = diff / top if top >= GAP_MIN else math.nan
  hard = by_seed(rows, method, ipc, HARD_BUDGET, "hard")
  teachers = [r["teacher_accuracy"] for r in rows.values()
              if "teacher_accuracy" in r]
  if hard and teachers and "diff" in out:
    hlr = teachers[0] - float(np.mean(list(hard.values())))
    out.update(hlr=100 * hlr, lrs=lrs(out["diff"] / 100, hlr))
  return out


def _cell_text(s: dict | None) -> str:
  if s is None:
    return "…"
  text = f"{s['mean']:.1f} ± {s['std']:.1f}"
  return text + ("" if s["n"] >= 3 else f" ({s['n']})")


def _diff_text(s: dict | None) -> str:
  if s is None or "diff" not in s:
    return "…" if s is None else "–"
  if math.isnan(s["half"]):
    return f"{s['diff']:+.1f} (1 pair)"
  mark = "**" if s["diff"] - s["half"] > 0 else ""
  return f"{mark}{s['diff']:+.1f} ± {s['half']:.1f}{mark}"


def write_table(rows: dict, path: str, budgets, ipcs, methods,
                results_name: str) -> None:
  """The markdown table, one section per budget, and its plots."""
  teachers = [r["teacher_accuracy"] for r in rows.values()
              if "teacher_accuracy" in r]
  lines = [
      "# Fashion-MNIST: a fair distillation table", "",
      f"Generated by `benchmarks/distill_table.py` from `{results_name}`. "
      "Student: ConvNet-3 w128 instance norm from scratch, online KD "
      "(T = 4) from the ConvNet-3 teacher on every augmented view, AdamW "
      "1e-3 with a 5% warm-up and cosine decay, flip + random-resized crop "
      "+ DSA + CutMix, the same for every row. Each seed redraws the set "
      "and the student; accuracy (%) on the whole test split after the "
      "last step (never the best of the curve), mean ± std over seeds "
      "(a count in brackets when fewer than 3). Δ: the paired difference "
      "against random real images of the same seed, mean ± 95% t-interval "
      "(bold when the interval is above 0). Gap closed: Δ over (ceiling − "
      "random). The curves (accuracy vs steps) are measured on a fixed "
      f"class-balanced {EVAL_IMAGES:,} of the test images.", "",
      "Methods:", "",
      *(f"- `{m}`: {METHODS[m]}." for m in methods), "",
      ("The hard-label teacher (the whole training split, hard labels): "
       f"**{100 * teachers[0]:.2f}%**." if teachers else ""), ""]
  for budget in budgets:
    lines += [
        f"## Budget {budget}: {BUDGET_NAMES[budget]}", "",
        "Steps of a batch: " + ", ".join(
            "IPC {}: {:,} of {}".format(i, *budget_of(budget, i))
            for i in ipcs) + ".", "",
        "| method | " + " | ".join(f"IPC {i}" for i in ipcs) + " | "
        + " | ".join(f"Δ IPC {i}" for i in ipcs) + " |",
        "|---|" + "---|" * (2 * len(ipcs))]
    entries = {m: [summary(rows, m, i, budget) for i in ipcs]
               for m in methods}
    for m in methods:
      lines.append(f"| {m} | " + " | ".join(map(_cell_text, entries[m]))
                   + " | " + " | ".join(map(_diff_text, entries[m])) + " |")
    lines += ["", "Gap closed, and DD-Ranking's metrics: IOR = Δ; HLR = "
              "the hard-label teacher's accuracy minus the set's under hard "
              "labels (the `--labels=hard` cells: CE + DSA for budget "
              f"{HARD_BUDGET}'s steps, one protocol for both budgets; lower "
              "is better); LRS = "
              "(e^α − e^−1) / (e − e^−1) with α = (IOR − HLR) / 2 on "
              "fractions (higher is better). Gap closed is left out (–) "
              "where the ceiling is within a point of random.", "",
              "| method | " + " | ".join(
                  f"gap closed IPC {i} | HLR IPC {i} | LRS IPC {i}"
                  for i in ipcs) + " |",
              "|---|" + "---|" * (3 * len(ipcs))]
    for m in methods:
      if m in (BASELINE, CEILING):
        continue
      cells = []
      for s in entries[m]:
        gap = s.get("gap_closed") if s else None
        cells.append("…" if gap is None else "–" if math.isnan(gap)
                     else f"{100 * gap:+.0f}%")
        cells.append(f"{s['hlr']:.1f}" if s and "hlr" in s else "…")
        cells.append(f"{s['lrs']:.3f}" if s and "lrs" in s else "…")
      lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", *best_lines(entries, ipcs, methods), ""]
    lines += spread_lines(rows, budget, ipcs, methods)
    for kind in ("vs_ipc", "vs_steps"):
      image = distill_accuracy.table_image(path, f"{kind}_{budget}")
      if plot(rows, image, budget, ipcs, methods, kind):
        lines += [f"![{kind} {budget}]({os.path.basename(image)})", ""]
  workdir.write_text(path, "\n".join(lines))


def spread_lines(rows: dict, budget: str, ipcs, methods) -> list[str]:
  """The sets' spread: their weighted latent variance over the class's.

  Mean over classes and seeds (``distill_accuracy.spread_ratio``): 1 for the
  class itself, lower for a set that huddles near the class mean.
  """
  table = {}
  for m in methods:
    for ipc in ipcs:
      values = [np.mean(r["set_spread"]) for r in rows.values()
                if r.get("method") == m and r.get("ipc") == ipc
                and r.get("budget") == budget and r.get("labels") == "soft"
                and "set_spread" in r]
      if values:
        table[m, ipc] = float(np.mean(values))
  if not table:
    return []
  return [
      "The sets' spread in the latent space (their weighted variance over "
      "the class's, mean over classes and seeds; 1 for the class itself):",
      "", "| method | " + " | ".join(f"IPC {i}" for i in ipcs) + " |",
      "|---|" + "---|" * len(ipcs),
      *(f"| {m} | " + " | ".join(
          f"{table[m, i]:.2f}" if (m, i) in table else "…" for i in ipcs)
        + " |" for m in methods if any((m, i) in table for i in ipcs)),
      ""]


def best_lines(entries: dict, ipcs, methods) -> list[str]:
  """Which method to use at each IPC: the largest Δ resolved above 0.

  A method is resolved when its 95% interval is above 0 (at least two
  seeds); without one, random real images are the advice.
  """
  lines = ["Which set to use (the largest paired Δ whose 95% interval is "
           "above 0, among the distilled rows):", ""]
  for col, ipc in enumerate(ipcs):
    cands = [(entries[m][col]["diff"], m) for m in methods
             if m not in (BASELINE, CEILING) and entries[m][col]
             and "diff" in entries[m][col]
             and entries[m][col]["diff"] - entries[m][col]["half"] > 0]
    if cands:
      diff = max(d for d, _ in cands)
      tied = [m for d, m in cands if d == diff]  # e.g. one centroid: one set
      s = entries[tied[0]][col]
      lines.append(f"- IPC {ipc}: **{' = '.join(tied)}**, {diff:+.1f} ± "
                   f"{s['half']:.1f} over random ({s['pairs']} seeds).")
    else:
      tried = [(entries[m][col]["diff"], m) for m in methods
               if m not in (BASELINE, CEILING) and entries[m][col]
               and "diff" in entries[m][col]]
      best = (f" (the best, {max(tried)[1]}, {max(tried)[0]:+.1f})"
              if tried else "")
      lines.append(f"- IPC {ipc}: random real images: no distilled set "
                   f"beats them with its interval above 0{best}.")
  return lines


def plot(rows: dict, path: str, budget: str, ipcs, methods,
         kind: str) -> bool:
  """Accuracy vs IPC (with the ceiling) or vs steps, one line per method.

  Returns whether there was anything to plot.
  """
  import matplotlib  # the benchmark's extra, loaded only to plot
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  if kind == "vs_ipc":
    fig, axes = plt.subplots(figsize=(6, 4))
    axes = [axes]
    drawn = False
    for m in methods:
      points = [(i, summary(rows, m, i, budget)) for i in ipcs]
      points = [(i, s["mean"]) for i, s in points if s]
      if points:
        drawn = True
        style = "k--" if m == CEILING else "o-"
        axes[0].plot(*zip(*points, strict=True), style, label=m)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("images per class")
    axes[0].set_ylabel("test accuracy (%)")
  else:
    fig, axes = plt.subplots(1, len(ipcs), figsize=(5 * len(ipcs), 4),
                             squeeze=False)
    axes = axes[0]
    drawn = False
    for ax, ipc in zip(axes, ipcs, strict=True):
      for m in methods:
        curves = [r["curve"] for r in rows.values()
                  if r.get("method") == m and r.get("ipc") == ipc
                  and r.get("budget") == budget and r.get("labels") == "soft"
                  and r.get("curve")]
        if not curves:
          continue
        length = min(len(c) for c in curves)
        steps = [c[0] for c in curves[0][:length]]
        acc = np.mean([[100 * p[1] for p in c[:length]] for c in curves], 0)
        ax.plot(steps, acc, "k--" if m == CEILING else "o-", label=m)
        drawn = True
      ax.set_title(f"IPC {ipc}")
      ax.set_xlabel("student steps")
    axes[0].set_ylabel("test accuracy (%)")
  if drawn:
    [ax for ax in axes if ax.get_legend_handles_labels()[0]][-1].legend(
        fontsize=7)
    fig.suptitle(f"budget {budget}")
    fig.tight_layout()
    workdir.save_atomic(path, lambda tmp: fig.savefig(tmp, format="png",
                                                      dpi=90))
  plt.close(fig)
  return drawn


def main(argv=None) -> None:
  harness.quiet_diffusers()
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--budget", default="A",
                      help="A, B or A,B: the student budgets to run.")
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--ipcs", default=",".join(map(str, IPCS)))
  parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                      help=f"A subset of {','.join(METHODS)}.")
  parser.add_argument("--labels", default="soft",
                      help="soft, hard or soft,hard (hard: the HLR cells).")
  parser.add_argument("--config", default="",
                      help="<file.py>[:<arg>] instead of the Fashion-MNIST "
                      "default (the tests use a tiny config).")
  parser.add_argument("--steps-scale", type=float, default=1.0,
                      help="Multiply every student budget (tests).")
  parser.add_argument("--table-only", action="store_true")
  parser.add_argument("--workroot", default=distill_accuracy.WORKROOT)
  parser.add_argument("--out", default=RESULTS)
  parser.add_argument("--table", default=TABLE)
  args = parser.parse_args(argv)
  budgets = [b for b in args.budget.split(",") if b]
  labels = [x for x in args.labels.split(",") if x]
  methods = list(dict.fromkeys(m for m in args.methods.split(",") if m))
  try:
    ipcs = harness.parse_ints(args.ipcs, "--ipcs")
    base = distill_accuracy.load_config(args.config)
  except ValueError as e:
    parser.error(str(e))
  if not budgets or set(budgets) - set(BUDGETS):
    parser.error(f"--budget {args.budget!r}: expected A, B or A,B.")
  if not labels or set(labels) - {"soft", "hard"}:
    parser.error(f"--labels {args.labels!r}: expected soft, hard or "
                 "soft,hard.")
  if "hard" in labels and HARD_BUDGET not in budgets:
    parser.error(f"--labels {args.labels!r} with --budget {args.budget!r}: "
                 f"hard-label cells are trained at budget {HARD_BUDGET} "
                 "only (one protocol for every budget's HLR); expected "
                 f"--budget to include {HARD_BUDGET}.")
  if not methods or set(methods) - set(METHODS):
    parser.error(f"--methods: unknown {sorted(set(methods) - set(METHODS))}"
                 f"; expected a subset of {','.join(METHODS)}.")
  if args.seeds < 1:
    parser.error(f"--seeds: {args.seeds} is not an integer >= 1.")
  if not (math.isfinite(args.steps_scale) and args.steps_scale > 0):
    parser.error(f"--steps-scale: {args.steps_scale} is not a finite "
                 "number > 0.")
  results_name = os.path.basename(args.out)
  if args.table_only:
    rows = harness.finished_rows(args.out)
    write_table(rows, args.table, budgets, sorted(ipcs), methods,
                results_name)
    print(f"table: {args.table}")
    return

  whole_ipc = smallest_class(base)
  # Seed-major: a finished seed is a complete paired comparison.
  cells = [(cell_name(m, i, b, lab, s), m, i, b, lab, s)
           for s in range(args.seeds) for b in budgets for lab in labels
           for i in ipcs for m in methods
           if not (lab == "hard" and (m == CEILING or b != HARD_BUDGET))]
  configs = {cell[0]: cell_config(base, *cell[1:], whole_ipc=whole_ipc,
                                  steps_scale=args.steps_scale)
             for cell in cells}
  rows = harness.finished_rows(args.out)
  default = distill_accuracy.load_config(args.config)
  other = [n for n, c in configs.items()
           if n in rows and rows[n].get("config_digest") != workdir.digest(c)
           and not same_config(stored_config(rows, args.workroot, n) or {},
                               c, default)]
  if other:
    parser.error(f"--out {args.out} has cells made with another config: "
                 f"{', '.join(other[:5])}; expected the same --config and "
                 "--steps-scale, or another --out.")
  os.makedirs(args.workroot, exist_ok=True)
  # The shared latents, which the sets' statistics are measured in.
  pipeline.run(base, os.path.join(args.workroot, "_base"),
               stages=("encode",), progress=False, log=lambda line: None)
  digests = {name: workdir.digest(c) for name, c in configs.items()}
  elsewhere = set()  # cells another live process runs
  for name, method, ipc, budget, lab, seed in cells:
    done = harness.finished_rows(args.out)
    if name in done:
      continue
    twins = {n for n, d in digests.items() if d == digests[name]} - {name}
    if twins & elsewhere:
      print(f"{name}: its twin {min(twins & elsewhere)} runs in another "
            "process; a later run copies its row", flush=True)
      continue
    if not claim(args.workroot, name):
      elsewhere.add(name)
      print(f"{name}: another process runs it", flush=True)
      continue
    twin = twin_row(done, digests[name])
    if twin is not None:
      row = {**twin, "cell": name, "method": method, "ipc": ipc,
             "budget": budget, "labels": lab, "seed": seed,
             "date": time.strftime("%Y-%m-%d"), "seconds": 0.0,
             "same_run_as": twin["cell"]}
      workdir.append_jsonl(args.out, row)
      release(args.workroot, name)
      print(f"{name}: the same run as {twin['cell']}", flush=True)
      continue
    try:
      result = distill_accuracy.run_cell(
          name, configs[name], args.workroot,
          donors=siblings(method, ipc, seed, name))
      row = {"cell": name, "method": method, "ipc": ipc, "budget": budget,
             "labels": lab, "seed": seed, "date": time.strftime("%Y-%m-%d"),
             "accuracy": result["accuracies"][0],
             "curve": (result["curves"] or [[]])[0],
             "teacher_accuracy": result["teacher_accuracy"],
             "config_digest": result["config_digest"],
             "config": workdir.to_jsonable(configs[name]),
             "student_steps": result["student_steps"],
             "student_batch": result["student_batch"],
             "seconds": result["seconds"]}
      if lab == "soft" and method != CEILING:
        row.update(distill_accuracy.set_stats(args.workroot, name,
                                              ("set_spread",)))
      workdir.append_jsonl(args.out, row)
      print(f"{name}: {100 * row['accuracy']:.2f} in "
            f"{row['seconds']:.0f} s", flush=True)
    finally:
      release(args.workroot, name)
    write_table(harness.finished_rows(args.out), args.table, budgets,
                sorted(ipcs), methods, results_name)
  write_table(harness.finished_rows(args.out), args.table, budgets,
              sorted(ipcs), methods, results_name)
  print(f"table: {args.table}")


if __name__ == "__main__":
  main()
