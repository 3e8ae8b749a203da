#!/usr/bin/env bash
# Throughput of the simulator's plain scim mode with faults off: GET /Users/{id} and POST /Users
# with wrk (apt-get install -y wrk). Builds the release binary first.
# Usage: crates/sim/bench/wrk.sh [DURATION] [CONNECTIONS]   (defaults 10s, 64)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$root"
duration="${1:-10s}"
conns="${2:-64}"
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 2; }
cargo build -q --release -p scimrelay-sim
target="${CARGO_TARGET_DIR:-$root/target}"
log="$(mktemp)"
RUST_LOG=warn "$target/release/scimrelay-sim" --listen 127.0.0.1:0 --tenant bench:scim >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
url="$(sed -n 's/^listening on //p' "$log" | head -1)"
base="$url/bench/scim/v2"
id="$(curl -s -X POST -H 'content-type: application/scim+json' \
  -d '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bench-get","name":{"givenName":"B","familyName":"N"}}' \
  "$base/Users" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')"
echo "== GET /Users/{id}"
wrk -t2 -c"$conns" -d"$duration" "$base/Users/$id"
echo "== POST /Users"
wrk -t2 -c"$conns" -d"$duration" -s "$root/crates/sim/bench/post_user.lua" "$base/Users"
echo "== stats"
curl -s "$url/_admin/tenants/bench/stats" | head -c 600; echo
