#!/usr/bin/env bash
# Property-based API fuzzing of ingest's HTTP API with schemathesis (issue 9).
#
# Builds and starts a real scimrelay-ingest on ephemeral ports against a fresh RabbitMQ vhost,
# runs schemathesis from crates/ingest/openapi.json (served at /openapi.json) with checks:
#   not_a_server_error            no 5xx, ever
#   response_schema_conformance   every response matches the documented schema
#   four_xx_names_what_was_wrong  every 4xx carries error.field or an explanatory error.message
#                                 (scripts/schemathesis_hooks.py)
# and prints the request count. Exits non-zero on any failure. Everything it started is
# stopped and the vhost deleted on exit.
#
# Needs: RabbitMQ with the management plugin on 127.0.0.1 (guest/guest; `make schemathesis`
# starts it), python3 with venv (installed when missing). schemathesis itself, pinned to
# SCHEMATHESIS_VERSION, is installed into target/schemathesis-venv when missing.
# Knobs: ST_MAX_EXAMPLES (default 300 per operation and phase), ST_SEED, RABBIT_MGMT.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SCHEMATHESIS_VERSION=${SCHEMATHESIS_VERSION:-4.32.5}
MAX_EXAMPLES=${ST_MAX_EXAMPLES:-300}
MGMT=${RABBIT_MGMT:-http://127.0.0.1:15672}
VENV=$ROOT/target/schemathesis-venv
VHOST=scimrelay-st-$$-$RANDOM
WORK=$(mktemp -d)
INGEST_PID=

cleanup() {
    local rc=$?
    if [[ -n $INGEST_PID ]] && kill -0 "$INGEST_PID" 2>/dev/null; then
        kill "$INGEST_PID" 2>/dev/null || true
        wait "$INGEST_PID" 2>/dev/null || true
    fi
    curl -fsS -u guest:guest -X DELETE "$MGMT/api/vhosts/$VHOST" >/dev/null 2>&1 || true
    if [[ $rc -ne 0 && -f $WORK/ingest.log ]]; then
        echo "--- last ingest log lines ---" >&2
        tail -n 20 "$WORK/ingest.log" >&2 || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT INT TERM

command -v curl >/dev/null || { echo "schemathesis: curl is required" >&2; exit 2; }
if ! curl -fsS -u guest:guest "$MGMT/api/overview" >/dev/null 2>&1; then
    echo "schemathesis: RabbitMQ management API not reachable at $MGMT" >&2
    echo "  start it: rabbitmq-server -detached && rabbitmq-plugins enable rabbitmq_management" >&2
    exit 2
fi

if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qwF -- "$SCHEMATHESIS_VERSION"; then
    scripts/ensure-python-venv.sh
    echo "schemathesis: installing schemathesis==$SCHEMATHESIS_VERSION into $VENV"
    start=$(date +%s)
    [[ -x $VENV/bin/pip ]] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
    echo "schemathesis: installed in $(( $(date +%s) - start ))s"
fi
echo "schemathesis: $("$VENV/bin/schemathesis" --version 2>&1 | head -n1)"

cargo build -q -p scimrelay-ingest

curl -fsS -u guest:guest -X PUT "$MGMT/api/vhosts/$VHOST" >/dev/null
curl -fsS -u guest:guest -X PUT -H 'content-type: application/json' \
    -d '{"configure":".*","write":".*","read":".*"}' \
    "$MGMT/api/permissions/$VHOST/guest" >/dev/null

cat >"$WORK/targets.yaml" <<'YAML'
targets:
  - id: st-scim
    provider: scim
    tenants: [acme]
    base_url: http://127.0.0.1:9/scim/v2
    auth: { kind: none }
YAML

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP_PORT=$(free_port)
GRPC_PORT=$(free_port)
BASE=http://127.0.0.1:$HTTP_PORT

SCIMRELAY_CONFIG=$WORK/targets.yaml \
SCIMRELAY_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/$VHOST" \
SCIMRELAY_INGEST_HTTP_ADDR=127.0.0.1:$HTTP_PORT \
SCIMRELAY_INGEST_GRPC_ADDR=127.0.0.1:$GRPC_PORT \
RUST_LOG=${RUST_LOG:-warn} \
    "${CARGO_TARGET_DIR:-$ROOT/target}/debug/scimrelay-ingest" >"$WORK/ingest.log" 2>&1 &
INGEST_PID=$!

for _ in $(seq 1 60); do
    curl -fsS "$BASE/readyz" >/dev/null 2>&1 && break
    kill -0 "$INGEST_PID" 2>/dev/null || { echo "schemathesis: ingest exited at start-up" >&2; exit 1; }
    sleep 0.5
done
curl -fsS "$BASE/readyz" >/dev/null || { echo "schemathesis: ingest never became ready" >&2; exit 1; }

# One valid event first: the generated bodies rarely satisfy the per-kind rules the schema does
# not express, so this proves the publish path (202 after the broker's confirm) works at all.
code=$(curl -sS -o "$WORK/first.json" -w '%{http_code}' -H 'content-type: application/json' \
    -d '{"kind":"user.upserted","tenant":"acme","version":1,"user":{"id":"u1","userName":"st@example.com"}}' \
    "$BASE/v1/events")
if [[ $code != 202 ]]; then
    echo "schemathesis: a valid event got $code, not 202: $(cat "$WORK/first.json")" >&2
    exit 1
fi

if curl -fsS "$BASE/openapi.json" -o "$WORK/openapi.json"; then
    SCHEMA=$BASE/openapi.json
else
    echo "schemathesis: $BASE/openapi.json not served; using crates/ingest/openapi.json" >&2
    SCHEMA=$ROOT/crates/ingest/openapi.json
fi

export SCIMRELAY_ST_LOG=$WORK/responses.jsonl
export SCHEMATHESIS_HOOKS=schemathesis_hooks
export PYTHONPATH=$ROOT/scripts${PYTHONPATH:+:$PYTHONPATH}
: >"$SCIMRELAY_ST_LOG"

set +e
"$VENV/bin/schemathesis" run "$SCHEMA" \
    --url "$BASE" \
    --checks not_a_server_error,response_schema_conformance,four_xx_names_what_was_wrong \
    --max-examples "$MAX_EXAMPLES" \
    ${ST_SEED:+--seed "$ST_SEED"} \
    --no-color
ST_RC=$?
set -e

if ! kill -0 "$INGEST_PID" 2>/dev/null; then
    echo "schemathesis: FAIL — ingest is no longer running (crash?)" >&2
    ST_RC=1
fi

python3 - "$SCIMRELAY_ST_LOG" <<'PY'
import collections, json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = collections.Counter((r["method"], r["path"], r["status"]) for r in rows)
print(f"schemathesis: {len(rows)} requests checked")
for (m, p, s), n in sorted(by.items()):
    print(f"  {m:6} {p:12} {s}: {n}")
# What the 4xx said, by field with batch positions folded (events[3].user -> events[].user).
import re
why = collections.Counter(
    (r["status"], re.sub(r"\[\d+\]", "[]", r.get("field") or "-"), (r.get("message") or "")[:70])
    for r in rows if 400 <= r["status"] < 500)
if why:
    print("schemathesis: most frequent 4xx reasons:")
    for (s, f, m), n in why.most_common(12):
        print(f"  {n:5} x {s} {f}: {m}")
PY
exit "$ST_RC"
