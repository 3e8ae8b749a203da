# scimrelay — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: help demo test lint fmt build proto rabbitmq conformance chaos

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-12s %s\n", $$1, $$2}'

proto: ## Make sure protoc is installed (needed to compile proto/)
	@scripts/ensure-protoc.sh

rabbitmq: ## Make sure RabbitMQ runs locally with the management plugin
	@scripts/ensure-rabbitmq.sh

build: proto ## Build every crate and binary (debug)
	$(CARGO) build --workspace --bins

demo: rabbitmq build ## Run everything against the simulator with sample events, print the outcomes
	./target/debug/scimrelay-demo

test: rabbitmq build lint ## Lint, then unit, integration and end-to-end tests (real RabbitMQ, real processes)
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

chaos: rabbitmq build ## The chaos suite at full size (5,000 events per scenario)
	SCIMRELAY_CHAOS_EVENTS=5000 $(CARGO) nextest run -p scimrelay-tests --no-fail-fast --no-capture -E 'test(chaos::)'
