"""What a run reports: ``report.md``, its plots, the distortion-vs-K table.

The pipeline writes ``report.md`` from the eval artefact's ``results.json``
and the workdir's evaluation history (``results_history.jsonl``); the
benchmarks use the same sweep table, slope sentence and plots.
"""

import os
from collections.abc import Sequence

import numpy as np

from pqd_jax import workdir

__all__ = [
    "HISTORY", "accuracy_by_ipc", "append_history", "fitted_slope",
    "plot_accuracy", "plot_sweep", "retire", "slope_sentence", "sweep_lines",
    "write_report",
]

HISTORY = "results_history.jsonl"
# The fields that make two evaluations comparable across IPCs.
SETTING = ("dataset", "baseline", "weights", "student_weights", "strength")


def fitted_slope(ks: np.ndarray, distortion: np.ndarray) -> float:
  """Least-squares slope of log(mean distortion over classes) vs log K.

  Args:
    ks: ``[m]`` the K of each row.
    distortion: ``[m, C]`` per-class distortion for each K.
  """
  mean = np.asarray(distortion, np.float64).mean(axis=1)
  return float(np.polyfit(np.log(ks), np.log(mean), 1)[0])


def slope_sentence(slope: float, dim: int) -> str:
  """The fitted distortion-vs-K slope next to the theory's -2/d rate."""
  text = (f"Fitted log-log slope {slope:.3f}; Zador's asymptotic rate for a "
          f"density on the d = {dim} latent dimensions is -2/d = "
          f"{-2 / dim:.4f}.")
  if slope < 0:
    text += (f" The measured slope is the rate of a {2 / -slope:.1f}-"
             "dimensional density (-2/d' = slope): the latents of a class "
             "concentrate near a set of that effective dimension.")
  return text


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  return plt


def _save(fig, path: str) -> None:
  # Atomic with a name of this process: processes may share the plot.
  workdir.save_atomic(path, fig.savefig)
  _pyplot().close(fig)


def plot_sweep(ks: np.ndarray, distortion: np.ndarray, dim: int,
               path: str) -> None:
  """Distortion vs K on log-log axes, per class and mean, with -2/d.

  Args:
    ks: ``[m]`` (m ≥ 2) the K of each row.
    distortion: ``[m, C]`` per-class distortion for each K.
    dim: the latent dimension d.
    path: the PNG to write.
  """
  plt = _pyplot()
  ks, distortion = np.asarray(ks), np.asarray(distortion)
  mean = distortion.mean(axis=1)
  slope = fitted_slope(ks, distortion)
  fig, ax = plt.subplots(figsize=(5, 3.6), dpi=100)
  for row in distortion.T:
    ax.loglog(ks, row, color="0.8", lw=0.8)
  ax.loglog(ks, mean, "o-", color="C0",
            label=f"mean over classes (slope {slope:.3f})")
  ax.loglog(ks, mean[0] * (ks / ks[0]) ** (-2 / dim), "--", color="C1",
            label=f"theory K^(-2/d), d = {dim}")
  ax.set_xlabel("K (centroids per class)")
  ax.set_ylabel("distortion = W2² of the quantizer")
  ax.legend(fontsize=8)
  fig.tight_layout()
  _save(fig, path)


def sweep_lines(ks: Sequence[int], mean_distortion: Sequence[float], *,
                label: str = "distortion", digits: int = 4,
                with_w2: bool = True) -> list[str]:
  """The distortion-vs-K markdown table (one column per K).

  Args:
    ks: the Ks.
    mean_distortion: the mean distortion over classes at each K.
    label: the distortion row's name.
    digits: significant digits.
    with_w2: add a row with the W2 (the distortion's square root).
  """
  row = lambda values: " | ".join(f"{v:.{digits}g}" for v in values)
  lines = ["| K | " + " | ".join(str(k) for k in ks) + " |",
           "|---|" + "---|" * len(ks),
           f"| {label} | {row(mean_distortion)} |"]
  if with_w2:
    lines.append(f"| W2 | {row(np.sqrt(mean_distortion))} |")
  return lines


def append_history(root: str, results: dict) -> None:
  """Appends an evaluation to the workdir's history (a JSON line)."""
  row = {k: results[k] for k in (*SETTING, "ipc", "accuracies",
                                 "accuracy_mean", "accuracy_std")}
  workdir.append_jsonl(os.path.join(root, HISTORY), row)


def accuracy_by_ipc(history: list[dict], setting: dict) -> dict[int, dict]:
  """The latest evaluation of each IPC with the same setting as ``setting``."""
  by_ipc = {}
  for row in history:
    if all(row.get(k) == setting.get(k) for k in SETTING) and "ipc" in row:
      by_ipc[int(row["ipc"])] = row
  return dict(sorted(by_ipc.items()))


def plot_accuracy(by_ipc: dict[int, dict], path: str) -> None:
  """Student accuracy (mean ± std) against IPC on a log axis."""
  plt = _pyplot()
  ipcs = np.asarray(list(by_ipc))
  mean = 100 * np.asarray([r["accuracy_mean"] for r in by_ipc.values()])
  std = 100 * np.asarray([r["accuracy_std"] for r in by_ipc.values()])
  fig, ax = plt.subplots(figsize=(5, 3.6), dpi=100)
  ax.errorbar(ipcs, mean, yerr=std, fmt="o-", capsize=3)
  ax.set_xscale("log")
  ax.set_xlabel("IPC (images per class)")
  ax.set_ylabel("student test accuracy (%)")
  fig.tight_layout()
  _save(fig, path)


def write_report(root: str, r: dict) -> str:
  """Writes ``report.md`` (and ``accuracy_vs_ipc.png``) into ``root``.

  Args:
    root: the workdir (its history is read from :data:`HISTORY`).
    r: the eval artefact's results.

  Returns:
    The report's path.
  """
  lines = [
      f"# pqd_jax distillation report: {r['dataset']}, IPC {r['ipc']}", "",
      "| IPC | quantizer weights | student weights | strength | student "
      "accuracy (mean ± std) | seeds | teacher (whole data) |",
      "|---|---|---|---|---|---|---|",
      f"| {r['ipc']} | {r['weights']} | {r['student_weights']} | "
      f"{r['strength']} | {100 * r['accuracy_mean']:.2f} ± "
      f"{100 * r['accuracy_std']:.2f}% | {len(r['accuracies'])} | "
      f"{100 * r['teacher_accuracy']:.2f}% |", "",
      f"Set: {r['baseline']}. Per-class distortion (W2² of the "
      f"mass-weighted quantizer): "
      f"{', '.join(f'{d:.3f}' for d in r['distortion']) or 'n/a'}.", "",
      f"Test images: {r['test_images']}. The synthetic set is in "
      "`synthetic/` (`set.npz` + uint8 `shards/`, `folder/`, `grid.png`).", ""]
  sweep = r.get("sweep") or {}
  if sweep.get("ks"):
    lines += [
        "## Distortion versus K", "",
        "Mean over classes of the distortion of the mass-weighted quantizer "
        "(its W2², exactly), latent dimension d = "
        f"{sweep['dim']}:", "",
        *sweep_lines(sweep["ks"], sweep["mean_distortion"]), ""]
    if sweep.get("fitted_slope") is not None:
      lines += [slope_sentence(sweep["fitted_slope"], sweep["dim"]), "",
                f"![distortion vs K]({sweep['plot']})", ""]
  history = workdir.read_jsonl(os.path.join(root, HISTORY))
  by_ipc = accuracy_by_ipc(history, r)
  if len(by_ipc) >= 2:
    plot_accuracy(by_ipc, os.path.join(root, "accuracy_vs_ipc.png"))
    lines += [
        "## Accuracy versus IPC", "",
        "Every IPC evaluated in this workdir with the same dataset, "
        "baseline, weights and strength (`results_history.jsonl`; the "
        "latest run of each IPC):", "",
        "| IPC | student accuracy (mean ± std) | seeds |", "|---|---|---|"]
    lines += [f"| {ipc} | {100 * row['accuracy_mean']:.2f} ± "
              f"{100 * row['accuracy_std']:.2f}% | {len(row['accuracies'])} |"
              for ipc, row in by_ipc.items()]
    lines += ["", "![accuracy vs IPC](accuracy_vs_ipc.png)", ""]
  path = os.path.join(root, "report.md")
  workdir.write_text(path, "\n".join(lines))
  return path


def retire(root: str, log=print) -> None:
  """Takes away the top-level results of an earlier run before a new one.

  ``results.json`` and ``report.md`` are written from the eval artefact when
  a run reaches eval, so they never sit beside artefacts they do not
  describe: a copy of ``eval/results.json`` (with its report) is removed, to
  be written again; results that are not such a copy (an earlier version's)
  are moved aside to ``results.old.json`` and ``report.old.md``.
  """
  results, report_md = (os.path.join(root, n)
                        for n in ("results.json", "report.md"))
  if not os.path.exists(results):
    return
  current = workdir.read_json(os.path.join(root, "eval", "results.json"))
  if current is not None and workdir.read_json(results) == current:
    for path in (results, report_md):
      if os.path.exists(path):
        os.remove(path)
    return
  moved = []
  for path, aside in ((results, "results.old.json"),
                      (report_md, "report.old.md")):
    aside = os.path.join(root, aside)
    while os.path.exists(aside):
      stem, ext = os.path.splitext(aside)
      aside = f"{stem}_{ext}"
    if os.path.exists(path):
      os.replace(path, aside)
      moved.append(os.path.basename(aside))
  log("results.json and report.md did not come from this workdir's eval "
      f"artefact: moved aside to {' and '.join(moved)}")
