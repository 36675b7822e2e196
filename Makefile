# One command per job; each creates .venv and installs what it needs.
#   make run    run the main job on the embedded default (Fashion-MNIST)
#   make test   run the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: run test test-slow lint bench data venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,sd]"
	touch $(STAMP)

# The Debian package `dataset-fashion-mnist` holds the full Fashion-MNIST.
# Installed when apt is there and we may use it; otherwise the data comes from
# $$PQD_DATA_DIR (see README) and the tests that need it are skipped.
data:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
	  || echo "warning: could not install dataset-fashion-mnist with apt"; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	  (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
	  || echo "warning: could not install dataset-fashion-mnist with apt"; \
	else echo "note: apt not usable; set PQD_DATA_DIR to the Fashion-MNIST IDX files"; fi

run: venv data
	$(PY) -m pqd_jax.main $(ARGS)

test: venv data
	$(PY) -m pytest -n 2 -q --durations=25 $(ARGS)

test-slow: venv data
	$(PY) -m pytest -q -m slow $(ARGS)

# ruff check only: `ruff format` would rewrite the Google/yapf-style 4-space
# continuation indents (as in ott-jax) into 2-space ones.
lint: venv
	$(VENV)/bin/ruff check pqd_jax tests benchmarks tools

bench: venv data
	$(PY) benchmarks/quantize_speed.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
