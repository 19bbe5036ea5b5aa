# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test install install-dev browser-deps bench lab clean

$(VENV)/.stamp-base: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e .
	@touch $@

$(VENV)/.stamp-dev: pyproject.toml $(VENV)/.stamp-base
	$(PIP) install -e '.[dev]'
	@touch $@

install: $(VENV)/.stamp-base

install-dev: $(VENV)/.stamp-dev

demo: install
	$(PY) -m lion_nb demo

test: install-dev
	$(PY) -m pytest -q

bench: install-dev
	$(PY) benchmarks/engine_overhead.py

lab: install-dev
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf $(VENV) build *.egg-info
