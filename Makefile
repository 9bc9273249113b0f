# Set-up and the two entry points of the README: `make demo` (main job) and `make test`.
# The CPU build of torch is pinned for these machines; the package itself accepts any
# recent torch (pyproject.toml), so GPU users install their own build first.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup data browser demo test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# Fashion-MNIST from Debian (needs root); without it the demo falls back to digits and the
# one test that reads the real files is skipped.
data:
	@test -d $(FMNIST) || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; } \
	  || echo "note: could not install dataset-fashion-mnist; the demo will use digits"

# Headless Chromium, for the test that renders the HTML report (skipped without it).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	  || echo "note: could not install chromium; the report's rendering test will be skipped"

demo: setup data
	$(VENV)/bin/contrasyn demo

test: setup data browser
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis
