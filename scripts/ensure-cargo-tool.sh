#!/usr/bin/env bash
# Makes sure a pinned cargo subcommand is in the project's own tool directory, .tools/bin
# (gitignored), and installs it there with `cargo install --locked` when it is missing or another
# version: what is on PATH or in CARGO_HOME is never used, so a fresh CARGO_HOME behaves like a
# fresh machine. Prints what it installed and how long that took.
#
#   scripts/ensure-cargo-tool.sh CRATE VERSION    e.g. scripts/ensure-cargo-tool.sh cargo-deny 0.20.2
#
# The binary is .tools/bin/CRATE; callers run it by that path.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $# -ne 2 ]]; then
    echo "usage: $0 CRATE VERSION" >&2
    exit 2
fi
crate=$1
version=$2
root=.tools
bin=$root/bin/$crate

installed() { "$bin" --version 2>/dev/null | head -n1 | grep -qwF -- "$version"; }

if installed; then exit 0; fi

if [[ -x $bin ]]; then
    echo "$crate: $bin is $("$bin" --version 2>/dev/null | head -n1 || echo 'unknown'), want $version; reinstalling"
else
    echo "$crate: not in $root/bin; installing $crate $version (cargo install --locked; a few minutes)"
fi
start=$(date +%s)
# A temporary build directory, not the workspace's: CARGO_TARGET_DIR would be reused otherwise.
env -u CARGO_TARGET_DIR cargo install --quiet --locked --force --root "$root" \
    --version "=$version" "$crate"
if ! installed; then
    echo "$crate: installed, but $bin --version does not report $version" >&2
    exit 1
fi
echo "$crate: installed $crate $version into $root/bin in $(( $(date +%s) - start ))s"
