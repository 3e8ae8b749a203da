#!/usr/bin/env bash
# protoc compiles proto/ at build time (crates/proto/build.rs). Installs it when missing.
set -euo pipefail
if command -v protoc >/dev/null 2>&1 || [ -n "${PROTOC:-}" ]; then exit 0; fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "protoc: not installed; installing protobuf-compiler with apt-get"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null
else
  echo "protoc: not found. Install protobuf-compiler (Debian/Ubuntu: sudo apt-get install protobuf-compiler;"
  echo "macOS: brew install protobuf) or set PROTOC to its path."
  exit 1
fi
