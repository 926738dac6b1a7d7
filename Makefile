# autoprov: `make run` (the stack in the foreground) and `make test` set up what is missing.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run up down purge test lint stubs bench deps system clean install

run: deps
	$(VENV)/bin/autoprov run

up: deps
	$(VENV)/bin/autoprov up

down:
	@if [ -x $(VENV)/bin/autoprov ]; then $(VENV)/bin/autoprov down; fi

# `down`, then delete this checkout's private database cluster (wherever it lives) and var/.
purge: deps
	$(VENV)/bin/autoprov purge

test: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Typed stubs for KSR, generated from the running proxy's app_python.api_list RPC; run it with a tls:
# socket in sip_listen and rtpengine_socket set, so every optional module is covered (the test
# tests/test_kamailio_ops.py compares the committed ones with such a proxy).
stubs: deps
	$(VENV)/bin/autoprov kamailio stubs --out typings

# The load generators (bench/phones.c is compiled against OpenSSL) and the static-file baseline
# are needed by the benchmarks only.
bench: deps
	@scripts/install-system-packages.sh wrk nginx apache2-utils curl gcc libc6-dev libssl-dev
	$(VENV)/bin/python -m bench

deps: system $(STAMP)

system:
	@scripts/install-system-packages.sh

# Kamailio embeds Debian's /usr/bin/python3, so the venv must be built from that interpreter.
$(STAMP): pyproject.toml
	@test -x $(PY) || /usr/bin/python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# autoprov as systemd services (docs/install.md); DESTDIR=DIR installs under DIR, as for a package.
install:
	DESTDIR="$(DESTDIR)" scripts/install-service.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
