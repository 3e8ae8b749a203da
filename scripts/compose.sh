#!/usr/bin/env bash
# The compose stack of `make compose-up`, `make compose-down` and `make compose-test`.
#
#   scripts/compose.sh up      build the images (scripts/image.sh; on the local path also
#                              scripts/compose-images.sh), start the stack, wait until every
#                              container is healthy and the sample sender exited 0
#   scripts/compose.sh down    remove its containers, network and volumes, then check none is left
#   scripts/compose.sh ARGS    any other compose command on the same files and project
#                              (`scripts/compose.sh -- up ...` for compose's own `up`)
# `up` passes further arguments to compose's `up`: `scripts/compose.sh up --scale demo-sender=0`.
#
# Project `scimrelay`. Host ports are the unusual 38xxx ones below, on 127.0.0.1 (docker-compose.yml's
# own defaults, 8080, 5672, 9090…, are often taken on a developer machine); set a variable to move
# one. PROFILE=postgres runs status on PostgreSQL (the compose `postgres` profile).
# COMPOSE_PATH=public|local|auto (default auto: local when debian:bookworm-slim cannot be pulled)
# picks docker-compose.yml alone or with docker-compose.local.yml (images built here).
set -euo pipefail

cd "$(dirname "$0")/.."
say() { printf 'compose: %s\n' "$*"; }

export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-scimrelay}
export SCIMRELAY_IMAGE=${SCIMRELAY_IMAGE:-scimrelay:dev}
export SCIMRELAY_INGEST_HTTP_PORT=${SCIMRELAY_INGEST_HTTP_PORT:-38080}
export SCIMRELAY_INGEST_GRPC_PORT=${SCIMRELAY_INGEST_GRPC_PORT:-38051}
export SCIMRELAY_STATUS_GRPC_PORT=${SCIMRELAY_STATUS_GRPC_PORT:-38052}
export SCIMRELAY_STATUS_HTTP_PORT=${SCIMRELAY_STATUS_HTTP_PORT:-38082}
export SCIMRELAY_SIM_PORT=${SCIMRELAY_SIM_PORT:-38090}
export SCIMRELAY_PROMETHEUS_PORT=${SCIMRELAY_PROMETHEUS_PORT:-38091}
export SCIMRELAY_RABBITMQ_PORT=${SCIMRELAY_RABBITMQ_PORT:-38672}
export SCIMRELAY_RABBITMQ_UI_PORT=${SCIMRELAY_RABBITMQ_UI_PORT:-38673}
export SCIMRELAY_JAEGER_UI_PORT=${SCIMRELAY_JAEGER_UI_PORT:-38686}
export SCIMRELAY_OTLP_GRPC_PORT=${SCIMRELAY_OTLP_GRPC_PORT:-38317}
export SCIMRELAY_OTLP_HTTP_PORT=${SCIMRELAY_OTLP_HTTP_PORT:-38318}
case "${PROFILE:-}" in
  "") ;;
  postgres)
    export COMPOSE_PROFILES=postgres
    export SCIMRELAY_STATUS_DB=${SCIMRELAY_STATUS_DB:-postgres://scimrelay:scimrelay-demo-not-a-secret@postgres:5432/scimrelay}
    ;;
  *) say "PROFILE must be empty (SQLite) or postgres, not $PROFILE"; exit 1 ;;
esac

COMPOSE_CMD=$(scripts/ensure-docker.sh --print-compose)
MODE=${COMPOSE_PATH:-auto}
if [ "$MODE" = auto ]; then
  if timeout 60 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then MODE=public; else MODE=local; fi
fi
FILES=(-f deploy/docker-compose.yml)
[ "$MODE" = local ] && FILES+=(-f deploy/docker-compose.local.yml)
compose() { $COMPOSE_CMD "${FILES[@]}" "$@"; }
project_filter="label=com.docker.compose.project=$COMPOSE_PROJECT_NAME"

# Waits until every container is healthy (the sample sender: exited 0); fails naming the others.
wait_healthy() {
  local deadline=$(($(date +%s) + ${COMPOSE_WAIT_SECS:-300})) bad
  while :; do
    bad=$(docker ps -aq --filter "$project_filter" | xargs -r docker inspect -f \
      '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}}' |
      awk '!(($2 == "running" && $3 == "healthy") || ($1 ~ /demo-sender/ && $2 == "exited" && $4 == 0))')
    [ -z "$bad" ] && return 0
    if [ "$(date +%s)" -ge "$deadline" ]; then
      say "not healthy after ${COMPOSE_WAIT_SECS:-300} s (name, state, health, exit code):"
      printf '  %s\n' "$bad"
      return 1
    fi
    sleep 2
  done
}

case "${1:-}" in
  up)
    started=$(date +%s)
    IMAGE_PATH=$MODE scripts/image.sh
    [ "$MODE" = local ] && scripts/compose-images.sh
    say "starting project $COMPOSE_PROJECT_NAME ($MODE path${PROFILE:+, profile $PROFILE})"
    compose up -d --no-build "${@:2}"
    wait_healthy
    say "every container healthy (the sample sender, if started, exited 0): up in $(($(date +%s) - started)) s"
    say "ingest http://127.0.0.1:$SCIMRELAY_INGEST_HTTP_PORT, status grpc 127.0.0.1:$SCIMRELAY_STATUS_GRPC_PORT," \
      "simulator http://127.0.0.1:$SCIMRELAY_SIM_PORT, Prometheus http://127.0.0.1:$SCIMRELAY_PROMETHEUS_PORT," \
      "RabbitMQ http://127.0.0.1:$SCIMRELAY_RABBITMQ_UI_PORT"
    ;;
  wait)
    wait_healthy
    ;;
  down)
    # Every profile active, so their containers and volumes go too.
    COMPOSE_PROFILES=postgres,jaeger compose down --volumes --remove-orphans --timeout 20
    left=$(docker ps -aq --filter "$project_filter"; docker network ls -q --filter "$project_filter";
      docker volume ls -q --filter "$project_filter")
    if [ -n "$left" ]; then
      say "left behind: $(echo "$left" | tr '\n' ' ')"
      exit 1
    fi
    say "no container, network or volume of project $COMPOSE_PROJECT_NAME left"
    ;;
  "")
    say "usage: scripts/compose.sh up|down|wait|<compose arguments>"
    exit 1
    ;;
  --)
    compose "${@:2}"
    ;;
  *)
    compose "$@"
    ;;
esac
