# scimrelay — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never
# Where cargo puts the binaries: CARGO_TARGET_DIR when set, as cargo itself does.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)

.PHONY: help demo test lint fmt build build-all proto rabbitmq conformance chaos helm-lint prometheus-rules bench bench-quick fuzz fuzz-smoke audit schemathesis image compose-up compose-down compose-test helm-venv

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-16s %s\n", $$1, $$2}'

proto: ## Make sure protoc is installed (needed to compile proto/)
	@scripts/ensure-protoc.sh

rabbitmq: ## Make sure RabbitMQ runs locally with the management plugin
	@scripts/ensure-rabbitmq.sh

build: proto ## Build every crate and binary (debug)
	$(CARGO) build --workspace --bins

# The binaries and every test target in one build: with the test targets' dev-dependencies in,
# features unify once (tokio's test-util, for one), so the test run that follows compiles nothing
# again. `build` alone, then the tests, compiled tokio and everything above it twice.
build-all: proto
	$(CARGO) build --workspace --all-targets

demo: rabbitmq build ## Run everything against the simulator with sample events, print the outcomes
	$(TARGET_DIR)/debug/scimrelay-demo

test: rabbitmq build-all lint helm-lint ## Lint, chart checks, then unit, integration and end-to-end tests (real RabbitMQ, real processes)
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace --no-fail-fast; \
	else \
	  $(CARGO) test --workspace --no-fail-fast; \
	fi

lint: proto ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

conformance: ## SCIM conformance (scim2-tester from PyPI) against the simulator's plain scim mode
	scripts/conformance.sh

chaos: rabbitmq build-all ## The chaos suite at full size (5,000 events per scenario, a 10,000-user CSV, group members arriving over 2 minutes, a login through 20,000 queued creations), with the scenarios that start a RabbitMQ node of their own
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  SCIMRELAY_CHAOS_EVENTS=5000 SCIMRELAY_CTL_USERS=10000 SCIMRELAY_REFS_SECS=120 SCIMRELAY_LOGIN_BACKLOG=20000 $(CARGO) nextest run --profile chaos -p scimrelay-tests --no-fail-fast --no-capture --run-ignored all -E 'test(chaos::) | test(ctl::) | test(references::) | test(login::)'; \
	else \
	  SCIMRELAY_CHAOS_EVENTS=5000 SCIMRELAY_CTL_USERS=10000 SCIMRELAY_REFS_SECS=120 SCIMRELAY_LOGIN_BACKLOG=20000 $(CARGO) test -p scimrelay-tests --test e2e --no-fail-fast -- --nocapture --test-threads=1 --include-ignored chaos:: ctl:: references:: login::; \
	fi

HELM_VENV := target/helm-venv
helm-lint: prometheus-rules ## Chart: strict lint, render (default + production), k8s 1.30 strict schemas; image/compose/chart agree with the binaries
	PYTHONDONTWRITEBYTECODE=1 $(HELM_VENV)/bin/python scripts/helm-lint.py
	PYTHONDONTWRITEBYTECODE=1 $(HELM_VENV)/bin/python -m pytest -q -p no:cacheprovider helm/tests

helm-venv:
	@scripts/ensure-python-venv.sh
	@test -x $(HELM_VENV)/bin/python || python3 -m venv $(HELM_VENV)
	@$(HELM_VENV)/bin/pip install --quiet --disable-pip-version-check -r helm/tests/requirements.txt

prometheus-rules: helm-venv ## promtool: deploy/prometheus scrape config and alert rules checked, every alert unit-tested firing and not
	PYTHON=$(HELM_VENV)/bin/python scripts/prometheus-rules.sh

image: ## Build the image (scimrelay:dev): public base images when pullable, else offline from Debian's packages + host-built binaries
	scripts/image.sh

compose-up: ## Start the compose stack (images built here if no registry), wait until all healthy; PROFILE=postgres for PostgreSQL
	scripts/compose.sh up

compose-down: ## Stop the compose stack and remove its containers, network and volumes
	PROFILE=postgres scripts/compose.sh down

compose-test: ## The compose stack end to end on SQLite then PostgreSQL: health, outcomes, Prometheus, dashboard, faults (minutes)
	scripts/compose-test.sh

bench: rabbitmq proto ## Benchmarks, release build (< 15 min): writes BENCHMARKS.md and docs/bench/*.png; BASELINE=REV also runs throughput and latency for REV and compares
	@test -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf || apt-get install -y -q fonts-dejavu-core || echo "charts need fonts-dejavu-core"
	$(CARGO) build --release --workspace --bins
	$(TARGET_DIR)/release/scimrelay-bench $(if $(BASELINE),--baseline $(BASELINE))

bench-quick: rabbitmq build ## Every benchmark section at a tiny size (< 2 min; make test runs it as a test)
	$(TARGET_DIR)/debug/scimrelay-bench --quick

fuzz: ## Every fuzz target for FUZZ_SECONDS (default 60) each, on stable; installs the pinned cargo-fuzz into .tools/ when missing
	scripts/fuzz.sh

fuzz-smoke: ## 5 s per fuzz target (same set-up as fuzz)
	FUZZ_SECONDS=5 scripts/fuzz.sh

audit: ## cargo-deny (pinned, installed into .tools/ when missing): licenses, bans, sources offline; advisories when the database is reachable
	scripts/audit.sh

schemathesis: rabbitmq ## Property-based API fuzzing of ingest (PyPI schemathesis) against RabbitMQ (ST_MAX_EXAMPLES, default 300)
	scripts/schemathesis.sh
