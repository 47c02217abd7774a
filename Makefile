# llmhost entry points. PY is the project's venv (make venv creates it).
PY ?= .venv/bin/python
PYINFRA_ARGS ?=  # passed to pyinfra by deploy/plan, e.g. PYINFRA_ARGS='--use-sudo-password -vv'

venv: .venv/bin/python  ## create .venv with the project and its test extras

.venv/bin/python:
	python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'

host-deps:       ## Debian packages the local test host needs (root)
	@command -v debootstrap >/dev/null && command -v systemd-nspawn >/dev/null && command -v tinyproxy >/dev/null \
	  && command -v zstd >/dev/null && command -v apt-ftparchive >/dev/null && command -v chromium >/dev/null \
	  && command -v certutil >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends debootstrap systemd-container tinyproxy zstd iproute2 openssh-client git make apt-utils \
	  chromium libnss3-tools >/dev/null)

deploy: .venv/bin/python  ## apply to inventories/home.py (LLMHOST_HOST, or else the local test host)
	@[ -n "$$LLMHOST_HOST" ] || [ -f .cache/testhost/inventory.json ] || $(MAKE) --no-print-directory test-host-up
	$(PY) -m pyinfra -y inventories/home.py deploy.py $(PYINFRA_ARGS)

plan: .venv/bin/python  ## what a run would change, with unit/env diffs
	$(PY) -m pyinfra inventories/home.py deploy.py --dry --diff $(PYINFRA_ARGS) </dev/null

test: .venv/bin/python host-deps  ## fast tier (niced) beside the real tier (the real tier needs root and systemd-nspawn)
	@mkdir -p .cache; nice -n 19 $(PY) -m pytest -q -rs -m 'not realhost' -p no:cacheprovider >.cache/fast-tier.log 2>&1 & fast=$$!; \
	$(PY) -m pytest -q -rs --durations=25 -m realhost; real=$$?; wait $$fast; fastrc=$$?; \
	echo '--- the fast tier, run beside the real tier (.cache/fast-tier.log) ---'; cat .cache/fast-tier.log; \
	[ $$real -eq 0 ] && [ $$fastrc -eq 0 ]

test-fast: .venv/bin/python  ## fast tier only (seconds)
	$(PY) -m pytest -q -m "not realhost"

test-host-up: .venv/bin/python host-deps  ## boot the disposable Debian 12 test host and the local model hub
	$(PY) -m testing.hub up && LLMHOST_HUB_PORT=18090 $(PY) -m testing.testhost up

test-host-down:
	$(PY) -m testing.testhost down; $(PY) -m testing.hub down

bench:           ## boot / apply / no-op timings, peak RAM, systemd-analyze security (a report, not a test)
	$(PY) tools/bench.py

bench-fleet:     ## fleet (3 hosts) apply / no-op against one host, in one run (a report, not a test)
	$(PY) tools/bench_fleet.py

.PHONY: venv host-deps deploy plan test test-fast test-host-up test-host-down bench bench-fleet
