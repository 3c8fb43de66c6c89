# AegisPay developer commands (GNU make). Needs only python3 (3.11+) on PATH: `make run` and
# `make test` start an embedded PostgreSQL and Redis unless DATABASE_URL / REDIS_URL are set.
# See embedded/ (python -m embedded).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install lock run test lint migrate clean-data fault-run routing-simulation router-latency \
	relay-bench replay-bench admin-bench serve-bench bench-lifecycle chromium simulate schemathesis \
	wrk bench-api bench-scale bench-memory

help:
	@echo "make run         migrate, seed the demo merchant, run web + worker + beat"
	@echo "make test        run the test suite (PYTEST_ARGS='...' to pass pytest arguments)"
	@echo "make lint        ruff check, ruff format --check, import-linter (app boundaries), mypy"
	@echo "make lock        resolve requirements.lock and requirements-dev.lock again (uv)"
	@echo "make migrate     apply migrations"
	@echo "make clean-data  stop the embedded servers and delete .aegispay"
	@echo "make fault-run   1,000 payments through two faulty sandbox gateways, then checks (BENCH_ARGS=...)"
	@echo "make routing-simulation  three sandbox gateways, the best degrades: strategies compared"
	@echo "make router-latency      router decision time with 10 gateways (p50, p99)"
	@echo "make relay-bench         outbox relay throughput to RabbitMQ and commit-to-publish lag"
	@echo "make replay-bench        replay_events over a million events (rate, memory)"
	@echo "make admin-bench         the admin payment list with a million payments (ms per page)"
	@echo "make bench-api           POST/GET /v1/payments against a bare DRF reference: req/s, p50, p99, ratio"
	@echo "make serve-bench         gunicorn worker classes and counts under wrk (req/s, p50, p99)"
	@echo "make bench-lifecycle     payments end to end through the make run processes (payments/s, stage p50/p90/p99)"
	@echo "make bench-memory        resident memory of every make run process over 100,000 payments (BENCH_ARGS=...)"
	@echo "make bench-scale         bench-api and bench-lifecycle at 0, 1M and 10M events seeded by COPY (BENCH_ARGS=...)"
	@echo "make simulate            the deterministic fault simulator: SEEDS=500 seeds, JOBS processes (SEED=N replays one)"
	@echo "make schemathesis        schemathesis against the served OpenAPI schema, gunicorn on embedded services (BENCH_ARGS=...)"

# The virtualenv, created once with python3 from PATH.
$(VPY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "AegisPay needs Python 3.11+ as '$(PYTHON)' (found: $$($(PYTHON) --version 2>&1))"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# The project and its dev tools, exactly as requirements-dev.lock pins them (with hashes);
# reinstalled whenever the lock or pyproject.toml changes.
$(STAMP): pyproject.toml requirements-dev.lock | $(VPY)
	$(VENV)/bin/pip install -r requirements-dev.lock
	$(VENV)/bin/pip install --no-deps -e .
	@touch $@

# The lock files, from pyproject.toml: requirements.lock (runtime: the image) and
# requirements-dev.lock (runtime, the embedded servers and the dev tools: make install, CI).
UV_COMPILE := $(VENV)/bin/uv pip compile pyproject.toml --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --generate-hashes --no-header --annotation-style line
lock: $(STAMP)
	$(UV_COMPILE) -o requirements.lock
	$(UV_COMPILE) --extra dev -o requirements-dev.lock

install: $(STAMP)

run: $(STAMP)
	$(VPY) -m embedded run

test: $(STAMP) chromium
	$(VPY) -m embedded test $(PYTEST_ARGS)

# Debian's Chromium for the back-office browser test (tests/payments/test_admin_browser.py).
# Installed once with apt-get when running as root (as CI does); otherwise the test is skipped
# and says how to install it.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get install -y --no-install-recommends chromium \
				|| { apt-get update && apt-get install -y --no-install-recommends chromium; }; \
		else \
			echo "note: /usr/bin/chromium is missing: the browser test will be skipped" \
				"(sudo apt-get install chromium to run it)"; \
		fi; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	@# mypy's Django plugin loads the settings, which connect to nothing: development values.
	DEBUG=true DATABASE_URL=postgres://typecheck@127.0.0.1/unused \
		REDIS_URL=redis://127.0.0.1:6379/15 $(VENV)/bin/mypy

migrate: $(STAMP)
	$(VPY) -m embedded manage migrate --noinput

clean-data:
	@if [ -x $(VPY) ]; then $(VPY) -m embedded stop; fi
	rm -rf .aegispay

fault-run: $(STAMP)
	$(VPY) -m embedded bench fault_run $(BENCH_ARGS)

routing-simulation: $(STAMP)
	$(VPY) -m embedded bench routing_simulation $(BENCH_ARGS)

router-latency: $(STAMP)
	$(VPY) -m embedded bench router_latency $(BENCH_ARGS)

relay-bench: $(STAMP)
	$(VPY) -m embedded bench relay_throughput $(BENCH_ARGS)

replay-bench: $(STAMP)
	$(VPY) -m embedded bench replay_rate $(BENCH_ARGS)

admin-bench: $(STAMP)
	$(VPY) -m embedded bench admin_list $(BENCH_ARGS)

# gunicorn's worker class and counts (aegispay/gunicorn.py), measured with wrk (Debian's
# package, installed when run as root).
serve-bench: $(STAMP) wrk
	@command -v wrk >/dev/null || { echo "serve-bench needs wrk: sudo apt-get install wrk"; exit 1; }
	$(VPY) -m embedded bench serve $(BENCH_ARGS)

# Debian's wrk for the HTTP benches, installed when run as root; bench-api falls back to its
# Python load generator (bench/loadgen.py) without it.
wrk:
	@command -v wrk >/dev/null || { [ "$$(id -u)" != 0 ] || apt-get install -y -q wrk \
		|| { apt-get update -q && apt-get install -y -q wrk; }; } || true

# POST and GET /v1/payments against a bare DRF app doing the same writes (bench/api.py), under
# the production server, in one run: req/s, p50, p99 and the ratios.
bench-api: $(STAMP) wrk
	$(VPY) -m embedded bench api $(BENCH_ARGS)

# Payments end to end (bench/lifecycle.py): POST /v1/payments to completed, through gunicorn, the
# worker, the relay and beat as make run starts them. BENCH_ARGS="--payments N --rate R" (R=0:
# as fast as possible), --connections, --timeout, --json PATH.
bench-lifecycle: $(STAMP)
	$(VPY) -m embedded bench lifecycle $(BENCH_ARGS)

# bench-api and bench-lifecycle as the event table grows (bench/scale.py): a database of its own
# seeded by COPY to each of --sizes events (default 0,1000000,10000000; never from scratch
# again), then both benches on it, one table at the end. BENCH_ARGS="--sizes ... --api-seconds S
# --api-rounds R --lifecycle-payments N --jobs J --json PATH"; --seed-only seeds and stops.
bench-scale: $(STAMP) wrk
	$(VPY) -m embedded bench scale $(BENCH_ARGS)

# The resident memory of every make run process over many payments (bench/memory.py): RSS
# sampled after each batch, growth after warm-up per role, FLAT or GROWS.
# BENCH_ARGS="--payments N --batch B --tolerance PERCENT --json PATH".
bench-memory: $(STAMP)
	$(VPY) -m embedded bench memory $(BENCH_ARGS)

# The deterministic fault simulator (bench/simulate.py): SEEDS seeds from FIRST_SEED, shared by
# JOBS processes (default: one per CPU), or replay one with SEED=N (its steps printed). CI runs
# the default 500.
SEEDS ?= 500
FIRST_SEED ?= 0
simulate: $(STAMP)
	$(VPY) -m embedded bench simulate \
		$(if $(SEED),--seed $(SEED),--seeds $(SEEDS) --first $(FIRST_SEED)) \
		$(if $(JOBS),--jobs $(JOBS)) $(BENCH_ARGS)

# schemathesis against /api/schema/ of gunicorn serving the app (bench/contract.py): every
# phase, stateful included, --checks all, a fixed seed; fails on any failure. CI runs the
# defaults; BENCH_ARGS="--seed N --max-examples M" for another run.
schemathesis: $(STAMP)
	$(VPY) -m embedded bench contract $(BENCH_ARGS)
