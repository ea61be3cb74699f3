# flowclas_ros developer entry points. From a fresh clone:  make demo  |  make test
# Everything runs inside the environment made by scripts/bootstrap (idempotent) and
# described by scripts/env.sh.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
ENV := source scripts/env.sh &&
PYTEST_ARGS ?=

.PHONY: help bootstrap build test lint format demo shell clean distclean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

bootstrap:  ## create .venv, install pinned requirements, build msgs (no-op when up to date)
	@scripts/bootstrap

build:  ## force a rebuild of the messages into install/
	@rm -f .venv/.stamps/colcon && scripts/bootstrap

test: bootstrap  ## run the whole test suite (what CI runs): one pytest process per test file, two files at a time
	@$(ENV) python scripts/run_tests.py $(PYTEST_ARGS)

lint: bootstrap  ## ruff check + format check
	@$(ENV) ruff check . scripts/anomaly_node && ruff format --check . scripts/anomaly_node

format: bootstrap  ## apply ruff fixes and formatting
	@$(ENV) ruff check --fix . scripts/anomaly_node && ruff format . scripts/anomaly_node

demo:  ## the whole mission end to end: data, training, eval, live replay through the node, ONNX, report (runs/demo)
	@start=$$(date +%s%N); scripts/bootstrap; ms=$$(( ($$(date +%s%N) - start) / 1000000 )); \
	$(ENV) python scripts/demo.py --bootstrap-seconds "$$((ms / 1000)).$$(printf %03d $$((ms % 1000)))" $(DEMO_ARGS)

shell: bootstrap  ## open a shell inside the environment
	@bash --rcfile <(printf '%s\n' '[ -f ~/.bashrc ] && source ~/.bashrc' 'source scripts/env.sh') -i

clean:  ## remove colcon build/install/log (keeps .venv)
	rm -rf build install log && rm -f .venv/.stamps/colcon

distclean: clean  ## also remove .venv
	rm -rf .venv
