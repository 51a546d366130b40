# raftkv developer tasks (GNU make). Needs only python3 (>= 3.11) and PyPI access.
#
#   make run        set up the venv and start a local 3-node cluster
#   make test       set up the venv, lint, type-check and run the fast tests

PY ?= python3
VENV = .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.DEFAULT_GOAL := help

.PHONY: help setup run test lint typecheck format pytest test-all sim-long bench bench-sim bench-kv clean jepsen \
	deploy-check rolling-restart fuzz browser etcd-tools screenshots

help:
	@echo "make run        set up and start a local 3-node cluster (Ctrl-C stops it)"
	@echo "make test       set up, lint, type-check and run the fast tests"
	@echo "make lint       ruff check + ruff format --check"
	@echo "make typecheck  mypy (strict on raftkv/)"
	@echo "make format     ruff format + ruff check --fix"
	@echo "make test-all   all tests, including those marked slow"
	@echo "make sim-long   simulate seeds 1-5000 with all faults, 1-1000 with all,hints, then"
	@echo "                1-1000 with --txn (also one Ready at a time: --serial-storage),"
	@echo "                with and without membership/snapshots/reads,"
	@echo "                1-1000 with --watches --leases, with and without membership/snapshots"
	@echo "make bench      both benchmarks below, one after the other"
	@echo "make bench-sim  simulator throughput (BENCH_PY=... runs it on another CPython)"
	@echo "make bench-kv   KV throughput/latency/failover: raftkv, etcd, PySyncObj side by side"
	@echo "make screenshots  regenerate docs/img/*.png (timeline pages in headless Chromium)"
	@echo "make etcd-tools  install Debian's etcdctl and etcd for the etcd API tests (as root)"
	@echo "make fuzz       long fuzz runs of every decoder (FUZZ_EXAMPLES, FUZZ_SECONDS)"
	@echo "make jepsen     fault-test real nodes, 3 then 5 (JEPSEN_SEED, JEPSEN_TIME)"
	@echo "make deploy-check     lint/validate deploy/ (Dockerfile, compose, Kubernetes)"
	@echo "make rolling-restart  measure a rolling restart of the StatefulSet pods under load"
	@echo "make clean      remove the venv, caches and build artifacts"

# The venv is rebuilt whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev,fast]'
	touch $(STAMP)

setup: $(STAMP)

# Start a local 3-node cluster (API on 127.0.0.1:8001-8003); Ctrl-C stops it.
run: $(STAMP)
	$(BIN)/python run.py

test: lint typecheck browser etcd-tools pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -n 2

test-all: $(STAMP)
	$(BIN)/python -m pytest -n 2

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

sim-long: $(STAMP)
	$(BIN)/raftkv sim --seeds 1-5000 --nodes 5 --faults all
	$(BIN)/raftkv sim --seeds 1-1000 --nodes 5 --faults all,hints
	$(BIN)/raftkv sim --seeds 1-1000 --nodes 5 --faults all --txn
	$(BIN)/raftkv sim --seeds 1-1000 --nodes 5 --faults all --txn --serial-storage
	$(BIN)/raftkv sim --seeds 1-1000 --nodes 5 --faults all --membership --snapshots 20 --reads --txn
	$(BIN)/raftkv sim --seeds 1-1000 --nodes 5 --faults all --watches --leases
	$(BIN)/raftkv sim --seeds 1-1000 --nodes 5 --faults all --watches --leases --membership --snapshots 20

bench: bench-sim bench-kv

# Simulator throughput. It needs only the standard library and msgpack (the
# replica layer's encoding), so BENCH_PY may name any CPython >= 3.11 with
# msgpack (e.g. BENCH_PY=/usr/bin/python3 with Debian's python3-msgpack).
BENCH_PY ?= $(BIN)/python
bench-sim: $(STAMP)
	PYTHONPATH=. $(BENCH_PY) bench/sim_throughput.py

# raftkv vs etcd (if installed: apt-get install etcd-server) vs PySyncObj (the
# bench extra), side by side in one run, plus a plot; docs/benchmarks.md.
BENCH_STAMP = $(VENV)/.bench-installed
ETCD = $(shell command -v etcd >/dev/null && echo ,etcd)
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -e '.[dev,fast,bench]'
	touch $(BENCH_STAMP)

bench-kv: $(BENCH_STAMP)
	$(BIN)/python bench/kv_bench.py --systems raftkv$(ETCD),pysyncobj,noop \
		--ops put,get,stale --concurrency 1,64,256 --repeat 3 --duration 10 --warmup 2 \
		--plot docs/img/kv_throughput.png
	$(BIN)/python bench/kv_bench.py --systems raftkv$(ETCD) --flavor nohints=--no-leader-hints \
		--ops '' --failover 12
	@command -v wrk >/dev/null || { echo "wrk not installed (apt-get install wrk): no second opinion"; exit 0; }; \
	$(BIN)/python bench/kv_bench.py --load wrk --systems raftkv$(ETCD),pysyncobj,noop \
		--ops put,get,stale --concurrency 64,256 --repeat 3 --duration 10 --warmup 2 && \
	$(BIN)/python bench/plot_kv.py --load wrk --systems raftkv,etcd,pysyncobj \
		--out docs/img/kv_throughput_wrk.png

# Offline checks of deploy/ (also run by `make test`, in tests/deploy/).
deploy-check: $(STAMP)
	$(BIN)/python deploy/check.py

# Rolling restart of the StatefulSet's pods (as local processes) under client load.
rolling-restart: $(STAMP)
	$(BIN)/python deploy/rolling_restart.py --rounds 3 --clients 8

# Jepsen-style fault test of real processes (docs/jepsen.md): 3 nodes, then 5,
# every fault kind, JEPSEN_TIME seconds each; network namespaces when run as root.
# --txn: range reads, transactions, delete-ranges and compactions too (checked by
# their revisions); it fails at once if the nodes lack the /v1 range and txn routes.
# --watches --leases: watchers on every node and lease clients, checked against the
# history replayed from the committed log.
JEPSEN_SEED ?= $(shell date +%s)
JEPSEN_TIME ?= 120
jepsen: $(STAMP)
	$(BIN)/raftkv jepsen --nodes 3 --time $(JEPSEN_TIME) --seed $(JEPSEN_SEED) --txn --watches --leases
	$(BIN)/raftkv jepsen --nodes 5 --time $(JEPSEN_TIME) --seed $(JEPSEN_SEED) --txn --watches --leases

# Headless Chromium for the browser tests: Debian's package, installed when we
# are root with apt-get (as in CI); otherwise those tests skip and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing Debian's chromium for the browser tests"; \
			apt-get install -y -q chromium >/dev/null 2>&1 || \
			{ apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } || \
			echo "could not install chromium: browser tests will skip"; \
		else echo "no chromium and not root: browser tests will skip"; fi; }

# Debian's etcdctl (etcd-client) and etcd (etcd-server) for the etcd API's real-client
# tests (tests/etcd/test_real_clients.py), installed as chromium is; else they skip.
etcd-tools:
	@command -v etcdctl >/dev/null 2>&1 && command -v etcd >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing Debian's etcd-client and etcd-server for the etcd API tests"; \
			apt-get install -y -q etcd-client etcd-server >/dev/null 2>&1 || \
			{ apt-get update -q >/dev/null 2>&1 && \
				apt-get install -y -q etcd-client etcd-server >/dev/null 2>&1; } || \
			echo "could not install etcd-client/etcd-server: etcdctl tests will skip"; \
		else echo "no etcdctl/etcd and not root: etcdctl tests will skip"; fi; }

# The README's pictures: timelines of a failing mutant seed and of a run with
# membership changes, snapshots and reads, rendered by headless Chromium.
SHOT = chromium --headless --no-sandbox --disable-gpu --hide-scrollbars
screenshots: $(STAMP) browser
	mkdir -p docs/img
	-$(BIN)/raftkv sim --seed 1 --nodes 5 --time 10 --mutant votes-twice --trace /tmp/raftkv-votes-twice.html
	$(SHOT) --window-size=1400,560 --screenshot=docs/img/timeline-violation.png file:///tmp/raftkv-votes-twice.html
	$(BIN)/raftkv sim --seed 4 --nodes 5 --time 30 --membership --snapshots --reads --trace /tmp/raftkv-complete.html
	$(SHOT) --window-size=1400,560 --screenshot=docs/img/timeline-membership.png file:///tmp/raftkv-complete.html
	$(BIN)/python docs/img/dashboard_screenshot.py

# Long fuzzing (docs/security.md): the hypothesis fuzz tests with many more
# examples, then, if atheris is installed (pip install atheris), coverage-guided
# runs of each decoder; a crash leaves its input in crash-* files.
FUZZ_EXAMPLES ?= 5000
FUZZ_SECONDS ?= 120
fuzz: $(STAMP)
	RAFTKV_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -n 2 \
		tests/security/test_fuzz_codec.py tests/security/test_fuzz_storage.py \
		tests/security/test_fuzz_http.py
	@if $(BIN)/python -c "import atheris" 2>/dev/null; then \
		for target in codec wal snapshot kv; do \
			echo "atheris: $$target for $(FUZZ_SECONDS)s"; \
			PYTHONPATH=. $(BIN)/python tests/security/atheris_fuzz.py $$target \
				-max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 || exit 1; \
		done; \
	else \
		echo "atheris not installed: skipped the coverage-guided runs (pip install atheris)"; \
	fi

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
