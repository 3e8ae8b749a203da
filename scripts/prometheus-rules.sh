#!/usr/bin/env bash
# `make prometheus-rules` (also run by `make helm-lint`): deploy/prometheus checked by promtool —
# the scrape config (`check config`, which also checks the rule file it loads), the alert rules
# (`check rules`) and their unit tests (`test rules`: every alert, firing and not firing), plus a
# check that every alert of alerts.yml has a test where it fires and one where it does not.
# promtool is the one on PATH, else target/tools/promtool, extracted from Debian's prometheus
# package (downloaded with apt-get download: seconds, nothing installed, no service started).
set -euo pipefail

cd "$(dirname "$0")/.."
DIR=deploy/prometheus
say() { printf 'prometheus-rules: %s\n' "$*"; }

PROMTOOL=${PROMTOOL:-$(command -v promtool || true)}
if [ -z "$PROMTOOL" ]; then
  PROMTOOL=$PWD/target/tools/promtool
  if [ ! -x "$PROMTOOL" ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
      say "needs promtool (Prometheus 2.x: https://prometheus.io/download/, or set PROMTOOL)"
      exit 1
    fi
    mkdir -p target/tools
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    chmod 777 "$work"  # apt-get download drops to the _apt user
    say "promtool missing; extracting it from Debian's prometheus package into $PROMTOOL"
    (cd "$work" && { apt-get download -qq prometheus >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get download -qq prometheus >/dev/null; }; })
    dpkg-deb --fsys-tarfile "$work"/prometheus_*.deb | tar -xO ./usr/bin/promtool > "$PROMTOOL.part"
    chmod +x "$PROMTOOL.part" && mv "$PROMTOOL.part" "$PROMTOOL"
  fi
fi
say "$("$PROMTOOL" --version 2>&1 | head -n1)"

# check config resolves rule_files relative to the config file and checks them as well.
"$PROMTOOL" check config "$DIR/prometheus.yml"
"$PROMTOOL" check rules "$DIR/alerts.yml"
(cd "$DIR" && "$PROMTOOL" test rules alerts_test.yml)

# Coverage: each alert must be expected to fire somewhere and expected silent somewhere else.
"${PYTHON:-python3}" - "$DIR/alerts.yml" "$DIR/alerts_test.yml" <<'PY'
import sys, yaml
rules = yaml.safe_load(open(sys.argv[1]))
tests = yaml.safe_load(open(sys.argv[2]))
alerts = [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
fires, silent = set(), set()
for t in tests.get("tests", []):
    for case in t.get("alert_rule_test", []):
        (fires if case.get("exp_alerts") else silent).add(case["alertname"])
missing = [f"{a}: no test where it fires" for a in alerts if a not in fires]
missing += [f"{a}: no test where it stays silent" for a in alerts if a not in silent]
for m in missing:
    print(f"prometheus-rules: FAIL {m}")
if missing:
    sys.exit(1)
print(f"prometheus-rules: {len(alerts)} alerts, each tested firing and not firing")
PY
