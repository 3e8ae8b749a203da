#!/usr/bin/env bash
# Makes sure a Docker engine answers (`docker info`) for `make image` and the compose targets.
# Uses the engine DOCKER_HOST (or the default socket) names when it answers; otherwise installs
# Debian's docker.io when missing (apt-get, as root) and starts dockerd by hand on the default
# socket (no init system is assumed), log in /var/log/scimrelay-dockerd.log. Also makes sure a
# compose client exists: the `docker compose` plugin when present, else Debian's docker-compose.
# Prints what it installed or started; prints the compose command to use on its last line when
# called with --print-compose.
set -euo pipefail

say() { printf 'docker: %s\n' "$*" >&2; }

apt_install() {
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "installing $* with apt-get"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    say "missing: $* (Debian/Ubuntu: sudo apt-get install $*; elsewhere install Docker Engine and Compose)"
    exit 1
  fi
}

if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null 2>&1; then
    apt_install docker.io
  fi
  if [ -n "${DOCKER_HOST:-}" ]; then
    say "DOCKER_HOST=$DOCKER_HOST does not answer; start that engine or unset DOCKER_HOST"
    exit 1
  fi
  if [ "$(id -u)" != 0 ]; then
    say "no engine answers and starting dockerd needs root (or add yourself to the docker group)"
    exit 1
  fi
  say "starting dockerd (default socket; log /var/log/scimrelay-dockerd.log)"
  setsid dockerd >/var/log/scimrelay-dockerd.log 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { say "dockerd did not answer within 60 s; see /var/log/scimrelay-dockerd.log"; exit 1; }
fi

if [ "${1:-}" = --print-compose ]; then
  if docker compose version >/dev/null 2>&1; then
    echo "docker compose"
  else
    command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose
    echo "docker-compose"
  fi
fi
