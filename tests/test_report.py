import json

import numpy as np
import pytest

from pqd_jax import report

SETTING = {"dataset": "d", "baseline": "distilled", "weights": "mass",
           "student_weights": "quantizer", "strength": 0.7}


def _results(ipc, mean):
  return dict(SETTING, ipc=ipc, accuracies=[mean], accuracy_mean=mean,
              accuracy_std=0.0, teacher_accuracy=0.9, distortion=[0.5],
              sweep={}, test_images=10)


def test_accuracy_by_ipc_keeps_the_latest_row_of_the_same_setting():
  rows = [dict(SETTING, ipc=1, accuracy_mean=0.5),
          dict(SETTING, ipc=1, accuracy_mean=0.6),
          dict(SETTING, ipc=10, weights="uniform", accuracy_mean=0.9)]
  by_ipc = report.accuracy_by_ipc(rows, SETTING)
  assert list(by_ipc) == [1]
  assert by_ipc[1]["accuracy_mean"] == 0.6


def test_a_history_line_cut_by_a_kill_is_skipped(tmp_path):
  (tmp_path / report.HISTORY).write_text('{"dataset": "d", "ip')
  report.append_history(str(tmp_path), _results(1, 0.5))
  lines = (tmp_path / report.HISTORY).read_text().splitlines()
  assert json.loads(lines[-1])["accuracy_mean"] == 0.5
  assert len(lines) == 2


def test_two_ipcs_in_the_history_add_the_accuracy_plot(tmp_path):
  for ipc, mean in ((1, 0.5), (10, 0.8)):
    report.append_history(str(tmp_path), _results(ipc, mean))
  text = open(report.write_report(str(tmp_path), _results(10, 0.8))).read()
  assert "## Accuracy versus IPC" in text and "| 1 | 50.00" in text
  assert (tmp_path / "accuracy_vs_ipc.png").exists()


def test_fitted_slope_recovers_a_power_law():
  ks = np.array([1, 2, 5, 10, 50])
  distortion = np.stack([3.0 * ks ** -0.4, 5.0 * ks ** -0.4], axis=1)
  assert report.fitted_slope(ks, distortion) == pytest.approx(-0.4)


def test_slope_sentence_names_the_effective_dimension():
  text = report.slope_sentence(-0.5, 196)
  assert "-2/d = -0.0102" in text and "4.0-dimensional" in text


def test_sweep_lines_have_a_column_per_k():
  lines = report.sweep_lines([1, 2], [4.0, 1.0])
  assert lines[0] == "| K | 1 | 2 |"
  assert lines[-1] == "| W2 | 2 | 1 |"


def test_plot_sweep_writes_the_png(tmp_path):
  path = str(tmp_path / "sweep.png")
  report.plot_sweep(np.array([1, 2, 4]), np.ones((3, 2)) / [[1], [2], [4]],
                    4, path)
  assert open(path, "rb").read(4) == b"\x89PNG"


def test_retire_removes_a_copy_of_the_eval_results(tmp_path):
  (tmp_path / "eval").mkdir()
  for path in ("eval/results.json", "results.json"):
    (tmp_path / path).write_text('{"a": 1}')
  (tmp_path / "report.md").write_text("# report")
  report.retire(str(tmp_path), log=lambda line: None)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]


def test_retire_moves_other_results_aside(tmp_path):
  (tmp_path / "results.json").write_text('{"old": 1}')
  (tmp_path / "report.md").write_text("# old")
  lines = []
  report.retire(str(tmp_path), log=lines.append)
  assert (tmp_path / "results.old.json").read_text() == '{"old": 1}'
  assert (tmp_path / "report.old.md").read_text() == "# old"
  assert not (tmp_path / "results.json").exists()
  assert "moved aside" in lines[0]
