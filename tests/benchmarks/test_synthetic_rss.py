"""benchmarks/synthetic_rss.py: peak RSS of decode + train per class count."""

import harness
import pytest
import synthetic_rss


def test_a_cell_is_measured_once(tmp_path, capsys):
  out = str(tmp_path / "rss.jsonl")
  args = ["--classes=3", "--ipc=2", f"--out={out}"]
  synthetic_rss.main(args)
  row = harness.finished_rows(out, key=("classes", "ipc", "size"))[3, 2, 224]
  assert row["images"] == 6 and row["set_bytes"] == 6 * 224 * 224 * 3
  assert row["train_rss_mib"] >= row["decode_rss_mib"] >= row["start_rss_mib"]
  capsys.readouterr()
  synthetic_rss.main(args)
  assert capsys.readouterr().out == ""  # finished: skipped


def test_bad_class_counts_are_a_usage_error(tmp_path):
  with pytest.raises(SystemExit):
    synthetic_rss.main(["--classes=a,b", f"--out={tmp_path / 'r.jsonl'}"])
