# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test install install-dev browser-deps postgres-deps bench bench-all lab clean

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

# Chromium for the browser tests (tests/browser): Debian's package when we are root;
# otherwise that suite skips with one line saying why (CI sets LION_REQUIRE_BROWSER=1).
browser-deps:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	    >/dev/null) || echo "make: could not install Debian's chromium; browser tests will skip"; \
	else echo "make: browser tests need /usr/bin/chromium (apt-get install chromium, as root)"; fi

# PostgreSQL tests start a throwaway server from Debian's binaries (initdb + pg_ctl).
postgres-deps:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql \
	    >/dev/null) || echo "make: could not install Debian's postgresql; PostgreSQL tests will skip"; \
	else echo "make: PostgreSQL tests need Debian's postgresql (apt-get install it as root)"; fi

test: install-dev browser-deps postgres-deps
	$(PY) -m mypy
	$(PY) -m pytest -q

bench: install-dev
	$(PY) benchmarks/engine_overhead.py

bench-all: install-dev postgres-deps
	for b in engine_overhead scheduler checkpoint events events_nats saga security notebook \
	    dask_runner postgres cache peers versus; do \
	  echo "== $$b"; $(PY) benchmarks/$$b.py || exit 1; done

lab: install-dev
	$(VENV)/bin/jupyter lab notebooks/ $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

clean:
	rm -rf $(VENV) build *.egg-info
