"""The Colab quickstart runs end to end (on the tiny pipeline config)."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT
from tests.tiny_folders import write_folder


def test_quickstart_notebook_runs_end_to_end(tmp_path, monkeypatch):
  root = write_folder(str(tmp_path / "folder"))
  config = os.path.join(ROOT, "pqd_jax", "configs", "tiny.py")
  monkeypatch.setenv("PQD_NOTEBOOK_CONFIG", f"{config}:{root}")
  monkeypatch.setenv("PQD_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.delenv("PQD_SOURCE", raising=False)
  path = os.path.join(ROOT, "colab", "quickstart.ipynb")
  nb = nbformat.read(path, as_version=4)
  # Started where the notebook sits, as Jupyter starts it.
  NotebookClient(nb, timeout=900, kernel_name="python3",
                 resources={"metadata": {"path": os.path.dirname(path)}}
                 ).execute()
  outputs = "".join(o.get("text", "") for c in nb.cells
                    if c.cell_type == "code" for o in c.get("outputs", []))
  # It would install the checkout it sits in, with the CPU build of JAX.
  assert f"install: install -q jax pqd_jax[sd] @ file://{ROOT}\n" in outputs
  assert "student accuracies" in outputs
  assert os.path.exists(tmp_path / "run" / "synthetic" / "grid.png")
  images = [o for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
  assert images  # the grid is displayed


# Slow (make test-slow): the same tiny-SD pipeline runs in CI through
# tests/test_pipeline_stable_diffusion.py; this adds the notebook's cells.
@pytest.mark.slow
def test_imagenet_notebook_runs_end_to_end_on_a_tiny_sd(tmp_path,
                                                        monkeypatch):
  pytest.importorskip("transformers")
  from tests import tiny_folders, tiny_sd

  root = tiny_folders.write_imagenet_folder(str(tmp_path / "folder"))
  sd_dir = tiny_sd.write_tiny_sd(str(tmp_path / "sd"), with_vae=True)
  config = os.path.join(ROOT, "pqd_jax", "configs", "tiny_imagenet.py")
  monkeypatch.setenv("PQD_NOTEBOOK_CONFIG", f"{config}:{root},{sd_dir}")
  monkeypatch.setenv("PQD_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.delenv("PQD_SOURCE", raising=False)
  path = os.path.join(ROOT, "colab", "imagenet_tpu.ipynb")
  nb = nbformat.read(path, as_version=4)
  NotebookClient(nb, timeout=900, kernel_name="python3",
                 resources={"metadata": {"path": os.path.dirname(path)}}
                 ).execute()
  outputs = "".join(o.get("text", "") for c in nb.cells
                    if c.cell_type == "code" for o in c.get("outputs", []))
  assert f"install: install -q jax pqd_jax[sd,tf] @ file://{ROOT}\n" in outputs
  assert "student accuracies" in outputs
  assert os.path.exists(tmp_path / "run" / "results.json")
