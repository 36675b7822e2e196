"""benchmarks/input_speed.py at a tiny size: its cells, measured once."""

import json

import harness
import input_speed
import numpy as np
import pytest

from pqd_jax.data import sources


def test_cells_are_measured_once_on_a_cached_jpeg_dataset(tmp_path, capsys):
  out = tmp_path / "speed.jsonl"
  args = ["--num-images=12", "--sizes=16", "--workers=0", "--repeats=2",
          "--batch-size=5", "--encode-images=11", "--encode-size=16",
          "--encode-batch-size=2", "--ae-blocks=8,8",
          f"--data-dir={tmp_path / 'data'}", f"--out={out}"]
  input_speed.main(args)
  rows = harness.finished_rows(str(out), key=("cell", "size", "workers",
                                              "num_images"))
  decode, encode = rows["decode", 16, 0, 12], rows["encode", 16, 0, 11]
  assert decode["images_per_s"] > 0 and len(decode["seconds"]) == 2
  assert 0 <= encode["wait_share"] <= 1 and encode["batches"] >= 4
  assert decode["machine"] == harness.machine()
  # The dataset: 500x375 JPEGs in 10 classes, read by the pipeline's source.
  source = sources.TfdsSource(input_speed.NAME, "train",
                              data_dir=str(tmp_path / "data" / "n12"))
  image, _ = source[3]
  assert image.shape == (375, 500, 3) and len(source) == 12
  assert np.array_equal(np.unique(source.labels), np.arange(10))
  capsys.readouterr()
  input_speed.main(args)  # finished cells: skipped, nothing built
  assert "encode 16 0 11: done" in capsys.readouterr().out
  assert len(out.read_text().splitlines()) == 2
  json.loads(out.read_text().splitlines()[-1])


@pytest.mark.parametrize("arg", ["--cells=train", "--encode-images=9",
                                 "--sizes=a"])
def test_bad_arguments_are_a_usage_error(tmp_path, arg):
  with pytest.raises(SystemExit):
    input_speed.main([arg, f"--out={tmp_path / 's.jsonl'}"])
