#!/usr/bin/env bash
# `make image`: builds the scimrelay image (${SCIMRELAY_IMAGE:-scimrelay:dev}) with the local engine,
# then proves it: every binary answers `--help` with exit 0 as uid 10001 on a read-only root
# filesystem; prints the image size and how long the build took.
#
# Two paths, one runtime stage (IMAGE_PATH=public|local, default auto):
#   public  deploy/Dockerfile with BuildKit: rust: builder image, debian:bookworm-slim runtime.
#           Taken when the public base image can be pulled.
#   local   deploy/Dockerfile.local with the classic builder, no registry: the base bootstrapped
#           from Debian's packages (scripts/debian-base.sh), the binaries built by the host's
#           toolchain (`cargo build --release --locked`, honouring CARGO_TARGET_DIR).
# Installs what it needs from Debian's packages (docker.io, mmdebstrap, protoc) when missing.
set -euo pipefail

cd "$(dirname "$0")/.."
IMAGE=${SCIMRELAY_IMAGE:-scimrelay:dev}
MODE=${IMAGE_PATH:-auto}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
CTX="$TARGET_DIR/image-local"
started=$(date +%s)

say() { printf 'image: %s\n' "$*"; }

scripts/ensure-docker.sh

# The binaries the runtime stage copies, read from deploy/Dockerfile itself.
mapfile -t BINS < <(grep -E '^COPY --from=builder ' deploy/Dockerfile | tr ' ' '\n' | grep '^/out/' | sed 's|^/out/||')
[ "${#BINS[@]}" -gt 0 ] || { say "found no COPY --from=builder /out/... line in deploy/Dockerfile"; exit 1; }

if [ "$MODE" = auto ]; then
  if timeout 60 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
    MODE=public
  else
    MODE=local
    say "debian:bookworm-slim cannot be pulled (no container registry): local path"
  fi
fi

case "$MODE" in
  public)
    say "public path: deploy/Dockerfile (BuildKit)"
    DOCKER_BUILDKIT=1 docker build -f deploy/Dockerfile -t "$IMAGE" .
    ;;
  local)
    glibc=$(getconf GNU_LIBC_VERSION | awk '{print $2}')
    if [ "$(printf '%s\n2.36\n' "$glibc" | sort -V | tail -n1)" != 2.36 ]; then
      say "the host's glibc $glibc is newer than bookworm's 2.36: its binaries would not run in the"
      say "image. Build on Debian 12 (or older glibc), or where the public images can be pulled."
      exit 1
    fi
    scripts/ensure-protoc.sh
    scripts/debian-base.sh
    bin_args=()
    for b in "${BINS[@]}"; do bin_args+=(--bin "$b"); done
    say "building ${#BINS[@]} binaries with the host toolchain (cargo build --release --locked)"
    cargo build --release --locked "${bin_args[@]}"
    rm -rf "$CTX"
    mkdir -p "$CTX/bin"
    for b in "${BINS[@]}"; do cp "$TARGET_DIR/release/$b" "$CTX/bin/"; done
    say "local path: deploy/Dockerfile.local (classic builder) on local/debian:bookworm-slim"
    DOCKER_BUILDKIT=0 docker build -f deploy/Dockerfile.local -t "$IMAGE" "$CTX"
    ;;
  *)
    say "IMAGE_PATH must be public, local or auto, not $MODE"
    exit 1
    ;;
esac

for b in "${BINS[@]}"; do
  if ! docker run --rm --read-only --user 10001 "$IMAGE" "$b" --help >/dev/null 2>&1; then
    say "FAILED: docker run --rm --read-only --user 10001 $IMAGE $b --help"
    docker run --rm --read-only --user 10001 "$IMAGE" "$b" --help 2>&1 | tail -5 || true
    exit 1
  fi
done
say "every binary answers --help as uid 10001 on a read-only root: ${BINS[*]}"
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
say "$IMAGE ($MODE path): $(awk -v s="$size" 'BEGIN {printf "%.0f MB (%d bytes)", s/1e6, s}'), built in $(($(date +%s) - started)) s"
