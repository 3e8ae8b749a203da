#!/usr/bin/env bash
# `make helm-lint` runs the chart checks in a virtualenv: it needs python3 >= 3.10 that can
# create one (Debian splits ensurepip into python3-venv). Installs them when missing.
set -euo pipefail
ok() {
  command -v python3 >/dev/null 2>&1 &&
    python3 -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 10))' 2>/dev/null
}
if ok; then exit 0; fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "python3 with venv: missing; installing python3 and python3-venv with apt-get"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
  ok && exit 0
fi
echo "helm-lint needs python3 >= 3.10 that can create a virtualenv (Debian/Ubuntu: sudo apt-get"
echo "install python3 python3-venv; macOS: brew install python)."
exit 1
