#!/usr/bin/env bash
# `make compose-test`: the compose stack end to end, once per status backend (COMPOSE_TEST_PROFILES,
# default "sqlite postgres"): scripts/compose.sh up (images built, every container healthy; the
# one-shot sample sender held back until the host has sent the same events), the
# checks of scripts/compose_test.py (sample events from the host, outcomes, health, Prometheus
# scrape, dashboard metric names, alert rules, fault drills on the dashboard's fault panels,
# traces), then scripts/compose.sh down, which fails if any container, network or volume of the
# project is left. The stack is torn down on every exit path (trap), failures included.
# Not part of `make test`: it takes several minutes and needs a Docker engine.
set -euo pipefail

cd "$(dirname "$0")/.."
say() { printf 'compose-test: %s\n' "$*"; }
LOGS=${COMPOSE_TEST_LOGS:-target/compose-test.log}

teardown() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$rc" != 0 ]; then
    mkdir -p target && scripts/compose.sh logs --no-color --tail 80 >"$LOGS" 2>&1 || true
    say "container logs (last 80 lines each) in $LOGS"
  fi
  PROFILE=postgres scripts/compose.sh down || rc=1
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

started=$(date +%s)
for profile in ${COMPOSE_TEST_PROFILES:-sqlite postgres}; do
  [ "$profile" = sqlite ] && export PROFILE= || export PROFILE=$profile
  say "== status on $profile"
  # a stack left by an interrupted run would answer instead of a fresh one
  PROFILE=postgres scripts/compose.sh down >/dev/null 2>&1 || true
  # The sample sender is run by the checks, after the host's own send.
  scripts/compose.sh up --scale demo-sender=0
  python3 scripts/compose_test.py
  PROFILE=postgres scripts/compose.sh down
done
say "done in $(($(date +%s) - started)) s"
