#!/usr/bin/env bash
# Runs the independent SCIM conformance checker scim2-tester (PyPI) against the simulator's plain
# `scim` mode: builds scimrelay-sim (debug), starts it on an ephemeral port with one scim tenant
# (bearer auth), runs check_server(...) and prints one line per check plus the counts.
# Exits non-zero when any check ends in ERROR or CRITICAL.
#
# Env: PYTHON (default python3), SCIM2_TESTER_VERSION (default 0.5.2),
#      CONFORMANCE_VERBOSE=1 prints passing checks too.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
venv="$target/conformance-venv"
python="${PYTHON:-python3}"
version="${SCIM2_TESTER_VERSION:-0.5.2}"

if ! command -v "$python" >/dev/null 2>&1; then
  echo "conformance: $python not found; install Python 3.10+ (apt-get install -y python3 python3-venv)" >&2
  exit 2
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "conformance: creating $venv"
  "$python" -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import scim2_tester, httpx2" 2>/dev/null; then
  echo "conformance: installing scim2-tester[httpx2]==$version"
  "$venv/bin/pip" install -q "scim2-tester[httpx2]==$version"
fi

cargo build -q -p scimrelay-sim
sim="$target/debug/scimrelay-sim"
log="$(mktemp)"
"$sim" --listen 127.0.0.1:0 --tenant conformance:scim:bearer=conformance-token >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
url=""
for _ in $(seq 1 100); do
  url="$(sed -n 's/^listening on \(http:\/\/[^ ]*\).*/\1/p' "$log" | head -1)"
  [ -n "$url" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "conformance: the simulator exited:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$url" ]; then
  echo "conformance: the simulator did not print its address" >&2
  exit 1
fi

SCIM_URL="$url/conformance/scim/v2/" "$venv/bin/python" - <<'PY'
import collections
import os
import sys

import httpx2
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import check_server
from scim2_tester.utils import Status

http = httpx2.Client(
    base_url=os.environ["SCIM_URL"],
    headers={"Authorization": "Bearer conformance-token"},
    timeout=10,
)
results = check_server(SyncSCIMClient(http))
failing = {Status.ERROR, Status.CRITICAL}
counts = collections.Counter(r.status.name for r in results)
verbose = os.environ.get("CONFORMANCE_VERBOSE") == "1"
for r in results:
    if verbose or r.status not in {Status.SUCCESS, Status.SKIPPED}:
        where = f" [{r.resource_type}]" if r.resource_type else ""
        print(f"{r.status.name:10} {r.title}{where}: {r.reason or ''}")
passed = sum(counts[s.name] for s in (Status.SUCCESS, Status.COMPLIANT, Status.ACCEPTABLE))
failed = sum(counts[s.name] for s in failing)
summary = ", ".join(f"{k.lower()} {v}" for k, v in sorted(counts.items()))
print(f"conformance: {passed}/{len(results)} checks passed ({summary})")
sys.exit(1 if failed else 0)
PY
