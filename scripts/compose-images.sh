#!/usr/bin/env bash
# Builds the images the compose stack needs besides scimrelay's own, for the local path
# (deploy/docker-compose.local.yml): RabbitMQ, PostgreSQL and Prometheus from Debian's packages and
# the OTLP receiver (rotel from PyPI), each on the base bootstrapped by scripts/debian-base.sh, with
# the classic builder and no container registry. Rebuilding is cheap: the engine's layer cache
# answers unless a Dockerfile changed. The tags are the ones docker-compose.local.yml names.
set -euo pipefail

cd "$(dirname "$0")/.."
ROTEL_VERSION=0.0.1a15
CTX="${CARGO_TARGET_DIR:-target}/compose-local"

say() { printf 'compose-images: %s\n' "$*"; }

scripts/ensure-docker.sh
scripts/debian-base.sh

build() { # tag dockerfile context
  say "$1 (deploy/local/$2)"
  local out
  if ! out=$(DOCKER_BUILDKIT=0 docker build -f "deploy/local/$2" -t "$1" "$3" 2>&1); then
    printf '%s\n' "$out" | tail -n 30
    say "building $1 failed (last lines above)"
    exit 1
  fi
}

mkdir -p "$CTX/empty" "$CTX/otlp"
build scimrelay-local/rabbitmq:3.10 rabbitmq.Dockerfile "$CTX/empty"
build scimrelay-local/postgres:15 postgres.Dockerfile "$CTX/empty"
build scimrelay-local/prometheus:2.42 prometheus.Dockerfile "$CTX/empty"

# rotel-agent comes out of PyPI's rotel wheel (a Rust binary; the wheel's Python is not needed).
if [ ! -x "$CTX/otlp/rotel-agent" ]; then
  say "fetching rotel==$ROTEL_VERSION from PyPI (pip download) for the OTLP receiver"
  rm -rf "$CTX/wheel" && mkdir -p "$CTX/wheel"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_34_x86_64 -d "$CTX/wheel" "rotel==$ROTEL_VERSION"
  python3 - "$CTX" <<'PY'
import sys, zipfile, pathlib
ctx = pathlib.Path(sys.argv[1])
wheel = next((ctx / "wheel").glob("rotel-*.whl"))
with zipfile.ZipFile(wheel) as z:
    (ctx / "otlp" / "rotel-agent").write_bytes(z.read("rotel/rotel-agent"))
(ctx / "otlp" / "rotel-agent").chmod(0o755)
PY
fi
build scimrelay-local/otlp-receiver:rotel-$ROTEL_VERSION otlp-receiver.Dockerfile "$CTX/otlp"
