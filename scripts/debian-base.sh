#!/usr/bin/env bash
# Bootstraps the base image of the offline (no container registry) path: a debian:bookworm-slim
# equivalent made from Debian's packages with mmdebstrap (minbase variant, documentation and
# locales left out the way the official slim image does), imported into the local engine as
# ${DEBIAN_BASE_IMAGE:-local/debian:bookworm-slim}. Does nothing when that image exists
# (FORCE=1 rebuilds it). Installs mmdebstrap from Debian's packages when missing.
set -euo pipefail

IMAGE=${DEBIAN_BASE_IMAGE:-local/debian:bookworm-slim}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

say() { printf 'debian-base: %s\n' "$*"; }

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "$IMAGE exists ($(docker image inspect -f '{{.Created}}' "$IMAGE"))"
  exit 0
fi
if ! command -v mmdebstrap >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "mmdebstrap missing; installing it with apt-get"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
  else
    say "needs mmdebstrap (Debian/Ubuntu: sudo apt-get install mmdebstrap) and root"
    exit 1
  fi
fi

started=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
say "bootstrapping $SUITE (minbase) from $MIRROR"
# As in the official slim images: dpkg leaves out man pages, docs and locales (also in later
# installs: mmdebstrap keeps these in /etc/dpkg/dpkg.cfg.d), and apt keeps no downloaded .deb,
# no binary caches and no translations, so `apt-get install` in a Dockerfile adds only the packages.
cat >"$work/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
echo 'Acquire::Languages "none";' >"$work/docker-no-languages"
echo 'Acquire::GzipIndexes "true";' >"$work/docker-gzip-indexes"
# merged-usr hook: /usr merged as on every bookworm system, without the usrmerge package (and the
# perl it pulls in), as in the official images.
mmdebstrap --variant=minbase --quiet \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook="upload $work/docker-clean /etc/apt/apt.conf.d/docker-clean" \
  --customize-hook="upload $work/docker-no-languages /etc/apt/apt.conf.d/docker-no-languages" \
  --customize-hook="upload $work/docker-gzip-indexes /etc/apt/apt.conf.d/docker-gzip-indexes" \
  --customize-hook='rm -f "$1"/var/cache/apt/*.bin "$1"/var/cache/apt/archives/*.deb' \
  "$SUITE" "$work/rootfs.tar" \
  "deb $MIRROR $SUITE main" \
  "deb $MIRROR $SUITE-updates main" \
  "deb $SECURITY $SUITE-security main" </dev/null >"$work/mmdebstrap.log" 2>&1 \
  || { tail -n 40 "$work/mmdebstrap.log"; say "mmdebstrap failed (last 40 lines above)"; exit 1; }
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["bash"]' \
  --message "mmdebstrap --variant=minbase $SUITE ($MIRROR)" \
  "$work/rootfs.tar" "$IMAGE" >/dev/null
say "imported $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')) in $(($(date +%s) - started)) s"
