"""benchmarks/stream_quantize.py: its data cell, written once."""

import json

import numpy as np
import stream_quantize

from pqd_jax.autoencoder import latents


def test_the_data_cell_writes_the_latents_once(tmp_path, capsys):
  args = ["--classes=2", "--points=8", "--cells=data",
          f"--data={tmp_path / 'data'}", f"--out={tmp_path / 's.jsonl'}"]
  stream_quantize.main(args)
  directory = tmp_path / "data_2x8"
  assert latents.read_index(str(directory))["counts"] == [8, 8]
  assert np.load(directory / "class_00001.npy").shape == (8, 32, 32, 4)
  row = json.loads((tmp_path / "s.jsonl").read_text())
  assert row["cell"] == "data_2x8" and row["classes"] == 2
  assert "machine" in row and "date" in row
  stream_quantize.main(args)
  assert "data_2x8: done" in capsys.readouterr().out
  assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 1
  assert sorted(p.name for p in directory.iterdir()) == [
      "class_00000.npy", "class_00001.npy", "index.json"]
