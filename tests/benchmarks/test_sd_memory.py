"""benchmarks/sd_memory.py: XLA's memory analysis of the SD-1 modules."""

import harness
import pytest
import sd_memory


def test_a_cell_is_measured_once(tmp_path, capsys):
  out = str(tmp_path / "mem.jsonl")
  args = ["--parts=decode", "--batches=1", "--dtypes=float32", f"--out={out}"]
  sd_memory.main(args)
  rows = harness.finished_rows(out, key=("part", "dtype", "batch"))
  row = rows["decode", "float32", 1]
  # Arguments hold at least the decoder's parameters (float32).
  assert row["argument_bytes"] > 4 * 49e6
  assert row["total_bytes"] >= row["temp_bytes"] > 0
  capsys.readouterr()
  sd_memory.main(args)
  assert capsys.readouterr().out == ""  # finished: skipped


def test_memory_grows_with_the_batch(tmp_path):
  small, large = (sd_memory.measure("decode", b, "float32") for b in (1, 2))
  assert large["temp_bytes"] > small["temp_bytes"]
  assert large["argument_bytes"] > small["argument_bytes"]


def test_unknown_parts_are_a_usage_error(tmp_path):
  with pytest.raises(SystemExit):
    sd_memory.main(["--parts=vae", f"--out={tmp_path / 'm.jsonl'}"])
