#!/usr/bin/env bash
# Dependency hygiene (issue 9): cargo-deny over the workspace with deny.toml.
#
#   set-up                  installs the pinned cargo-deny (CARGO_DENY_VERSION) into .tools/bin
#                           when missing (scripts/ensure-cargo-tool.sh), and downloads every crate
#                           in Cargo.lock, for every platform, when some are missing (cargo fetch):
#                           the offline checks read them all, not only this host's.
#   licenses bans sources   always; offline (needs only Cargo.lock and the local registry cache)
#   advisories              only when the RustSec database is reachable (github.com) or already
#                           on disk; otherwise skipped with a loud notice — never a silent pass.
#                           AUDIT_REQUIRE_ADVISORIES=1 turns the skip into a failure (for CI).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=${CARGO_DENY_VERSION:-0.20.2}
scripts/ensure-cargo-tool.sh cargo-deny "$CARGO_DENY_VERSION"
deny() { .tools/bin/cargo-deny deny "$@"; }

if ! cargo fetch --locked --offline >/dev/null 2>&1; then
    echo "audit: downloading the crates in Cargo.lock (cargo fetch, every platform)"
    start=$(date +%s)
    cargo fetch --locked --quiet
    echo "audit: cargo fetch took $(( $(date +%s) - start ))s"
fi

echo "audit: cargo deny $CARGO_DENY_VERSION check licenses bans sources (offline)"
deny --offline --locked check --hide-inclusion-graph licenses bans sources

DB_DIR=${CARGO_HOME:-$HOME/.cargo}/advisory-dbs
if timeout 10 git ls-remote -q https://github.com/rustsec/advisory-db HEAD >/dev/null 2>&1; then
    echo "audit: cargo deny check advisories (database fetched from github.com)"
    deny --locked check advisories
elif compgen -G "$DB_DIR/*" >/dev/null; then
    echo "audit: github.com unreachable; checking advisories against the STALE local database in $DB_DIR"
    deny --offline --locked check --disable-fetch advisories
else
    echo "audit: ADVISORIES NOT CHECKED — github.com (RustSec advisory-db) is unreachable and no" >&2
    echo "audit: local copy exists in $DB_DIR. Run this on a networked machine or in CI." >&2
    if [[ ${AUDIT_REQUIRE_ADVISORIES:-0} == 1 ]]; then exit 1; fi
fi
echo "audit: ok"
