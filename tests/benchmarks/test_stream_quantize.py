"""benchmarks/stream_quantize.py: its data cell and its summary."""

import json

import harness
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


def _results(tmp_path, pass_seconds):
  # 1,000 points of D = 100: a pass's distances are 2 * 10 * 100 * 1,000
  # = 2 MFLOP, 2 ms at 1 GFLOP/s; reading them at 1 GB/s is 0.2 ms.
  out = tmp_path / "s.jsonl"
  rows = [{"cell": "limits_t", "xla_gflops": 1.0, "copy_gbs": 1.0},
          {"cell": "stream_t", "points": 1000, "dim": 100,
           "flops_per_point_pass": 2 * 10 * 100, "seconds": 1.0,
           "pass_seconds": pass_seconds, "mean_distortion": 1.0,
           "peak_rss_gb": 1.0},
          {"cell": "minibatch_t", "seconds": 3.0, "mean_distortion": 1.1}]
  out.write_text("".join(json.dumps(row) + "\n" for row in rows))
  return harness.Results(str(out))


def test_a_recount_pass_is_judged_on_its_own(tmp_path):
  text = stream_quantize.summary(_results(tmp_path, [0.3, 0.1, 0.1]), "t",
                                 "limits_t")
  assert "CLVQ pass 0.100 s, 2.0% of its floor 0.002 s" in text
  assert "recount pass 0.10 s" in text


def test_a_folded_recount_doubles_the_pass_floor(tmp_path):
  text = stream_quantize.summary(_results(tmp_path, [0.3, 0.1]), "t",
                                 "limits_t")
  assert "CLVQ pass + recount 0.100 s, 4.0% of its floor 0.004 s" in text
  assert "seeding pass 0.30 s = 3.00 of it" in text
