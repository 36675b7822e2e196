"""benchmarks/distill_accuracy.py on the tiny pipeline config."""

import json
import os

import harness
import numpy as np
import pytest
from sklearn.cluster import KMeans

from pqd_jax import workdir
from pqd_jax.autoencoder import model as ae_lib
from pqd_jax.data import splits, synthetic
from tests.conftest import ROOT, load_script
from tests.tiny_folders import write_folder

CONFIG_FILE = os.path.join(ROOT, "pqd_jax", "configs", "tiny.py")


def _load_benchmark():
  return load_script("benchmarks", "distill_accuracy.py")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("bench")
  root = write_folder(str(tmp / "folder"))
  bench = _load_benchmark()
  args = ["--quick", "--ipcs=2", "--methods=random,decode,ddoq", "--w2-ipc=2",
          f"--config={CONFIG_FILE}:{root}", "--steps-scale=0.0005",
          "--sweep-ks=1,2,3", "--prior-knobs=0.9:4", "--prior-knobs-ipc=2",
          f"--workroot={tmp / 'work'}",
          f"--out={tmp / 'results' / 'fm.jsonl'}",
          f"--table={tmp / 'results' / 'fm.md'}"]
  bench.main(args)
  return bench, args, tmp


def _rows(tmp):
  with open(tmp / "results" / "fm.jsonl") as f:
    return [json.loads(line) for line in f]


def test_every_cell_is_recorded(finished):
  _, _, tmp = finished
  cells = [r["cell"] for r in _rows(tmp)]
  assert cells == ["autoencoder", "sweep", "random_ipc2_soft",
                   "decode_ipc2_soft", "ddoq_ipc2_soft", "w2_ipc2",
                   "random_ipc2_hard", "ddoq_ipc2_hard",
                   "ddoq_ipc2_soft_strength0.9_guidance4"]


def test_the_table_has_our_rows_and_the_published_ones(finished):
  _, _, tmp = finished
  table = (tmp / "results" / "fm.md").read_text()
  header = "| method | labels | IPC 2 | source |"
  assert header in table
  for line in ("| **pqd_jax random** | soft (online KD) |",
               "| **pqd_jax ddoq** | hard (CE, DSA) |",
               "| DSA | hard |", "| RCIG (no norm) | learned |"):
    assert line in table, line
  rows = [ln for ln in table.splitlines() if ln.startswith("| **pqd_jax")]
  assert all(ln.count("|") == header.count("|") for ln in rows)
  assert "## W2: cell-mass versus uniform weights" in table
  assert "## How far each distilled set is from its class" in table
  assert "Autoencoder: latents " in table and " dB on the " in table


def test_the_sweep_plot_is_named_after_its_table(finished):
  _, _, tmp = finished
  table = (tmp / "results" / "fm.md").read_text()
  assert "![distortion vs K](fm_distortion_vs_k.png)" in table
  assert (tmp / "results" / "fm_distortion_vs_k.png").exists()


def test_the_autoencoder_row_is_its_test_psnr_and_latent_shape(finished):
  bench, args, tmp = finished
  row = next(r for r in _rows(tmp) if r["cell"] == "autoencoder")
  c = bench.load_config(next(a for a in args if a.startswith("--config="))
                        .split("=", 1)[1])
  x = splits.open_split(c, "test").read().astype(np.float64) / 127.5 - 1.0
  ae = ae_lib.load_pretrained(str(tmp / "work" / "_base" / "autoencoder"
                                  / "final"))
  z = ae_lib.encode(ae, x.astype(np.float32))
  recon = np.clip(np.asarray(ae_lib.decode(ae, z), np.float64), -1, 1)
  mse = np.mean(((recon - x) / 2) ** 2)  # on the [0, 1] scale
  assert row["test_psnr"] == pytest.approx(10 * np.log10(1 / mse), abs=1e-3)
  assert row["latent_shape"] == list(z.shape[1:])
  assert row["test_images"] == len(x)


def test_mass_weights_are_no_further_than_uniform_in_w2(finished):
  _, _, tmp = finished
  w2 = next(r for r in _rows(tmp) if r["cell"] == "w2_ipc2")
  assert all(m <= u + 1e-6 for m, u in zip(w2["w2_mass"], w2["w2_uniform"],
                                          strict=True))


def test_a_rerun_skips_finished_cells(finished, capsys):
  bench, args, tmp = finished
  before = _rows(tmp)
  bench.main(args)
  assert _rows(tmp) == before
  assert "random_ipc2_soft: done" in capsys.readouterr().out


def test_the_cells_share_one_teacher_and_one_prior(finished):
  _, _, tmp = finished
  teacher = ("random_ipc2_soft", "ddoq_ipc2_soft", "random_ipc2_hard",
             "ddoq_ipc2_hard")
  prior = ("ddoq_ipc2_soft", "ddoq_ipc2_hard",
           "ddoq_ipc2_soft_strength0.9_guidance4")
  for artefact, cells in (("teacher", teacher), ("prior", prior)):
    stages = {(tmp / "work" / c / artefact / "stage.json").read_text()
              for c in cells}
    assert len(stages) == 1, artefact  # made once (its seconds), then copied


def _soft_rows_and_num_classes(tmp):
  with open(tmp / "work" / "_base" / "latents" / "index.json") as f:
    num_classes = len(json.load(f)["counts"])
  return [r for r in _rows(tmp) if r["cell"].endswith("_soft")], num_classes


def test_soft_cells_record_the_w2_of_their_set_per_class(finished):
  soft, num_classes = _soft_rows_and_num_classes(finished[2])
  assert soft and all(len(r["set_w2"]) == num_classes
                      and min(r["set_w2"]) > 0 for r in soft)


def test_soft_cells_record_the_spread_of_their_set_per_class(finished):
  soft, num_classes = _soft_rows_and_num_classes(finished[2])
  assert soft and all(len(r["set_spread"]) == num_classes
                      and min(r["set_spread"]) > 0 for r in soft)


def test_the_spread_of_the_class_itself_is_one():
  bench = _load_benchmark()
  x = np.random.default_rng(0).normal(size=(50, 2, 3))
  assert bench.spread_ratio(x, x, np.full(50, 7.0)) == pytest.approx(1.0)


def test_the_spread_of_mass_weighted_centroids_is_one_minus_distortion():
  bench = _load_benchmark()
  x = np.random.default_rng(0).normal(size=(300, 4)) * [1.0, 2.0, 0.5, 3.0]
  km = KMeans(5, n_init=3, random_state=0).fit(x)
  counts = np.bincount(km.labels_, minlength=5)
  variance = np.mean(np.sum((x - x.mean(0)) ** 2, axis=1))
  expected = 1.0 - km.inertia_ / len(x) / variance  # law of total variance
  assert bench.spread_ratio(x, km.cluster_centers_, counts) == pytest.approx(
      expected, rel=1e-9)


def test_a_rerun_measures_the_set_statistics_a_row_lacks(finished, tmp_path):
  bench, args, tmp = finished
  rows = _rows(tmp)
  old = next(r for r in rows if r["cell"] == "ddoq_ipc2_soft")
  out = tmp_path / "fm.jsonl"
  out.write_text("".join(
      json.dumps({k: v for k, v in r.items()
                  if k not in ("set_w2", "set_spread")}) + "\n"
      for r in rows))
  bench.main([a for a in args if not a.startswith(("--out=", "--table="))]
             + [f"--out={out}", f"--table={tmp_path / 'fm.md'}"])
  new = harness.finished_rows(str(out))["ddoq_ipc2_soft"]
  assert new["set_w2"] == pytest.approx(old["set_w2"], rel=1e-5)
  assert new["set_spread"] == pytest.approx(old["set_spread"], rel=1e-5)


def test_a_rerun_measures_only_the_statistics_a_row_lacks(finished, tmp_path):
  bench, args, tmp = finished
  out = tmp_path / "fm.jsonl"
  out.write_text("".join(
      json.dumps({k: v for k, v in r.items() if k != "set_spread"}
                 | ({"set_w2": [-1.0]} if "set_w2" in r else {})) + "\n"
      for r in _rows(tmp)))
  bench.main([a for a in args if not a.startswith(("--out=", "--table="))]
             + [f"--out={out}", f"--table={tmp_path / 'fm.md'}"])
  new = harness.finished_rows(str(out))["ddoq_ipc2_soft"]
  assert new["set_w2"] == [-1.0] and len(new["set_spread"]) > 1


def test_a_prior_knob_cell_decodes_with_its_strength_and_guidance(finished):
  _, _, tmp = finished
  work = tmp / "work"
  with open(work / "ddoq_ipc2_soft_strength0.9_guidance4" / "config.json") as f:
    decode = json.load(f)["decode"]
  assert (decode["strength"], decode["guidance_scale"]) == (0.9, 4.0)
  a = synthetic.load_set(str(work / "ddoq_ipc2_soft" / "synthetic"))[0]
  b = synthetic.load_set(str(work / "ddoq_ipc2_soft_strength0.9_guidance4"
                             / "synthetic"))[0]
  assert not np.allclose(a[:], b[:])


def test_the_table_shows_the_prior_knobs_beside_the_default(finished):
  _, _, tmp = finished
  table = (tmp / "results" / "fm.md").read_text()
  assert "## The prior's strength and guidance (ddoq, IPC 2, soft" in table
  knob_rows = [ln for ln in table.splitlines()
               if ln.startswith(("| 0.9 | 4 |", "| 0.5 (the table's) | 2 |"))]
  assert [ln[:5] for ln in knob_rows] == ["| 0.5", "| 0.9"], table
  assert all(not ln.endswith("… |") for ln in knob_rows)


@pytest.mark.parametrize("knobs, bad", [
    ("1.5:4", "1.5:4"), ("0.5", "0.5"), ("0.5:x", "0.5:x"),
    ("0.5:-1", "0.5:-1"), ("0.5:nan", "0.5:nan"), ("0.5:inf", "0.5:inf"),
    ("0.5:4,1.5:4", "1.5:4"), ("0.5:4,0.5000001:4", "0.5000001:4")])
def test_a_bad_prior_knob_is_a_usage_error_naming_it(knobs, bad, capsys,
                                                      tmp_path):
  bench = _load_benchmark()
  with pytest.raises(SystemExit) as e:
    bench.main([f"--prior-knobs={knobs}", f"--workroot={tmp_path}"])
  assert e.value.code == 2
  assert repr(bad) in capsys.readouterr().err
  assert not os.listdir(tmp_path)  # refused before any work


def test_a_prior_knob_equal_to_the_table_setting_is_refused(capsys, tmp_path):
  bench = _load_benchmark()
  root = write_folder(str(tmp_path / "folder"))
  with pytest.raises(SystemExit) as e:
    bench.main(["--prior-knobs=0.9:4,0.5:2", f"--config={CONFIG_FILE}:{root}",
                f"--workroot={tmp_path / 'work'}"])
  assert e.value.code == 2
  assert "0.5:2 is the table's own ddoq setting" in capsys.readouterr().err
  assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("flag, bad", [
    ("--ipcs=a", "'a'"), ("--ipcs=10,0", "'0'"), ("--ipcs=,", "','"),
    ("--sweep-ks=1,x", "'x'"), ("--sweep-ks=-1", "'-1'"),
    ("--steps-scale=nan", "nan"), ("--steps-scale=-1", "-1"),
    ("--methods=random,bogus", "'bogus'"), ("--w2-ipc=0", "--w2-ipc: 0"),
    ("--config=/no/such/config.py", "'/no/such/config.py'"),
    ("--config=no_such_dir/config", "'no_such_dir/config'")])
def test_a_bad_flag_is_a_usage_error_naming_it(flag, bad, capsys, tmp_path):
  bench = _load_benchmark()
  with pytest.raises(SystemExit) as e:
    bench.main([flag, f"--workroot={tmp_path / 'work'}",
                f"--out={tmp_path / 'fm.jsonl'}"])
  assert e.value.code == 2
  assert bad in capsys.readouterr().err
  assert not os.listdir(tmp_path)  # refused before any work


def test_cells_of_another_budget_are_refused_before_any_work(finished, capsys,
                                                             tmp_path):
  bench, args, tmp = finished
  before = _rows(tmp)
  with pytest.raises(SystemExit) as e:
    bench.main([a for a in args if not a.startswith(("--steps-scale=",
                                                     "--workroot="))]
               + ["--steps-scale=0.001", f"--workroot={tmp_path / 'work'}"])
  assert e.value.code == 2
  assert ("random_ipc2_soft (1 steps of 100; this run: 2 of 100)"
          in capsys.readouterr().err)
  assert _rows(tmp) == before
  assert not (tmp_path / "work").exists()


def test_the_table_has_every_ipc_and_method_of_the_results_file(finished,
                                                                 tmp_path):
  bench, args, tmp = finished
  table = tmp_path / "fm.md"
  bench.main([a for a in args if not a.startswith(("--table=", "--methods="))]
             + ["--table-only", "--methods=random", f"--table={table}"])
  assert "| **pqd_jax ddoq** | soft (online KD) |" in table.read_text()


def test_a_run_tables_the_cells_another_process_finished_meanwhile(
    finished, tmp_path, monkeypatch):
  bench, args, tmp = finished
  out, table = tmp_path / "fm.jsonl", tmp_path / "fm.md"
  out.write_text("".join(json.dumps(r) + "\n" for r in _rows(tmp)
                         if r["cell"] != "random_ipc2_hard"))
  theirs = {"cell": "ddoq_ipc5_soft", "method": "ddoq", "ipc": 5,
            "labels": "soft", "accuracies": [0.123], "accuracy_mean": 0.123,
            "accuracy_std": 0.0}
  run_cell = bench.run_cell

  def run_cell_while_another_process_appends(name, config, workroot):
    workdir.append_jsonl(str(out), theirs)
    return run_cell(name, config, workroot)

  monkeypatch.setattr(bench, "run_cell", run_cell_while_another_process_appends)
  bench.main([a for a in args if not a.startswith(("--out=", "--table=",
                                                   "--methods="))]
             + ["--methods=random", f"--out={out}", f"--table={table}"])
  assert "random_ipc2_hard" in harness.finished_rows(str(out))
  ddoq = next(ln for ln in table.read_text().splitlines()
              if ln.startswith("| **pqd_jax ddoq** | soft"))
  assert ddoq.endswith("| 12.3 (1 seed) | this run |")


def test_table_only_rewrites_the_same_table_and_runs_nothing(finished,
                                                             tmp_path):
  bench, args, tmp = finished
  table = tmp_path / "fm.md"
  bench.main([a for a in args if not a.startswith(("--table=", "--workroot="))]
             + ["--table-only", f"--table={table}",
                f"--workroot={tmp_path / 'work'}"])
  assert table.read_text() == (tmp / "results" / "fm.md").read_text()
  assert not (tmp_path / "work").exists()


def test_tables_in_one_directory_keep_their_own_images(finished, tmp_path):
  bench, args, tmp = finished
  theirs = {tmp_path / "main_distortion_vs_k.png": b"main plot",
            tmp_path / "main_grid_ddoq.png": b"main grid"}
  for path, content in theirs.items():
    path.write_bytes(content)
  other = tmp_path / "other.md"
  bench.main([a for a in args if not a.startswith("--table=")]
             + ["--table-only", f"--table={other}"])
  bench.copy_grid(str(tmp / "work"), "ddoq_ipc2_soft", "ddoq", str(other))
  assert all(path.read_bytes() == content for path, content in theirs.items())
  assert (tmp_path / "other_distortion_vs_k.png").exists()
  assert (tmp_path / "other_grid_ddoq.png").read_bytes() == (
      tmp / "work" / "ddoq_ipc2_soft" / "synthetic" / "grid.png").read_bytes()


def test_a_run_with_another_config_is_refused(finished, tmp_path):
  bench, args, tmp = finished
  other = tmp_path / "other.py"
  other.write_text(
      "from pqd_jax.configs import tiny\n\n"
      "def get_config(root):\n"
      "  c = tiny.get_config(root)\n"
      "  c.decode.guidance_scale = 3.0\n"
      "  return c\n")
  config = next(a for a in args if a.startswith("--config="))
  root = config.rsplit(":", 1)[1]
  with pytest.raises(SystemExit):
    bench.main([a for a in args if a != config]
               + [f"--config={other}:{root}"])
