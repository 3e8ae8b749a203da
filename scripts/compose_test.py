#!/usr/bin/env python3
"""The checks of `make compose-test` against a running compose stack (scripts/compose-test.sh starts
it with scripts/compose.sh and tears it down, whatever happens here). Standard library only.

Steps, each printed PASS or FAIL; the last line is `compose-test: N passed, M failed`:
  health          every container is running and healthy (the stack runs without its one-shot
                  sample sender: scripts/compose-test.sh starts it with `--scale demo-sender=0`)
  send            the sample events go through ingest from the host (scimrelayctl of the image, host
                  network, ingest's published port)
  outcomes        `scimrelayctl status targets` shows every sample event succeeded at every target
  sender          the stack's sample sender (`compose run demo-sender`) exits 0; its events, already
                  delivered, change no count
  scrape          Prometheus (of the stack) scrapes every service's /metrics, all up
  rules           Prometheus loaded deploy/prometheus/alerts.yml, every rule healthy
  faults          faults injected at the simulator (token revoked, 429s, 500s, a mass deactivation
                  against a small guard) show in status and in the dashboard's fault panels: each
                  panel's query, as written, returns a value > 0 for the faulty target
  alerts          the dead-letter and held-event alerts fire in Prometheus, the quarantine one is
                  pending or firing
  dashboard-names every metric the Grafana dashboard's queries name is in Prometheus's scrape
                  (after the drills: a family such as retries has no series before its first event)
  dashboard-data  every query of every dashboard panel returns data over the last minutes
  traces          spans of the services reached the OTLP receiver (Jaeger's API on the public path)

Environment: the SCIMRELAY_*_PORT variables of scripts/compose.sh, SCIMRELAY_IMAGE,
COMPOSE_PROJECT_NAME.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "scimrelay-dashboard.json"
SAMPLES = ROOT / "deploy" / "samples" / "events.json"
PROJECT = os.environ.get("COMPOSE_PROJECT_NAME", "scimrelay")
IMAGE = os.environ.get("SCIMRELAY_IMAGE", "scimrelay:dev")
INGEST = f"http://127.0.0.1:{os.environ.get('SCIMRELAY_INGEST_HTTP_PORT', '38080')}"
STATUS = f"http://127.0.0.1:{os.environ.get('SCIMRELAY_STATUS_GRPC_PORT', '38052')}"
SIM = f"http://127.0.0.1:{os.environ.get('SCIMRELAY_SIM_PORT', '38090')}"
PROMETHEUS = f"http://127.0.0.1:{os.environ.get('SCIMRELAY_PROMETHEUS_PORT', '38091')}"
JAEGER = f"http://127.0.0.1:{os.environ.get('SCIMRELAY_JAEGER_UI_PORT', '38686')}"
# The compose demo's throwaway key (deploy/compose/keys.yaml), as docker-compose.yml's sender uses.
API_KEY = "srk_compose-demo-sender-not-a-secret"
TARGETS = ["scim-demo", "github-demo", "aws-demo", "salesforce-demo"]
SERVICES = ["scimrelay-ingest", "scimrelay-status", "scim-connector", "github-connector",
            "aws-connector", "salesforce-connector"]
# Fault panel title -> (target the drill breaks, what it injects).
FAULT_PANELS = {
    "Quarantined targets": "aws-demo",
    "Throttling answers (/s)": "github-demo",
    "Dead-lettered events (/s)": "scim-demo",
    "Deprovisionings held by the guard (/s)": "salesforce-demo",
}


class Failed(Exception):
    pass


def http(method: str, url: str, body=None, headers=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={
        "content-type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        text = r.read().decode()
        return r.status, (json.loads(text) if text.strip() else None)


def prom(path: str, **params):
    _, body = http("GET", f"{PROMETHEUS}{path}?{urllib.parse.urlencode(params)}")
    if body.get("status") != "success":
        raise Failed(f"Prometheus {path}: {body}")
    return body["data"]


def ctl(*args: str, mounts: list[str] | None = None) -> str:
    """scimrelayctl of the image, on the host's network, against the published ports."""
    cmd = ["docker", "run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp",
           "--user", "10001", "-e", f"SCIMRELAY_INGEST_URL={INGEST}", "-e", f"SCIMRELAY_STATUS_URL={STATUS}",
           "-e", f"SCIMRELAY_API_KEY={API_KEY}"]
    for m in mounts or []:
        cmd += ["-v", m]
    cmd += [IMAGE, "scimrelayctl", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise Failed(f"scimrelayctl {' '.join(args)} exited {p.returncode}: {p.stderr.strip()[-800:]}")
    return p.stdout


def targets_status() -> dict[str, dict]:
    return {t["target"]: t for t in json.loads(ctl("status", "targets", "--json"))}


def wait(what: str, probe, timeout: float, every: float = 2.0):
    """Calls probe() until it returns a true value; raises with the last value after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise Failed(f"{what}: not reached within {timeout:.0f} s; last: {last}")
        time.sleep(every)


def panels():
    def walk(ps):
        for p in ps:
            yield p
            yield from walk(p.get("panels", []))
    return [p for p in walk(json.loads(DASHBOARD.read_text())["panels"]) if p.get("targets")]


def concrete(expr: str, rate_interval: str = "1m") -> str:
    """A panel query as Grafana sends it with every target selected ($target's allValue `.*`)."""
    return expr.replace("$__rate_interval", rate_interval).replace("$target", ".*")


# ---------------------------------------------------------------------------------------------


def check_health():
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"],
                         capture_output=True, text=True, check=True).stdout.split()
    if not out:
        raise Failed("no container of the project runs")
    info = json.loads(subprocess.run(["docker", "inspect", *out], capture_output=True, text=True,
                                     check=True).stdout)
    problems, seen = [], []
    for c in info:
        name = c["Name"].lstrip("/")
        state = c["State"]
        health = (state.get("Health") or {}).get("Status", "none")
        seen.append(f"{c['Config']['Labels'].get('com.docker.compose.service')}={health if health != 'none' else state['Status']}")
        if "demo-sender" in name:  # a one-shot container, when one ran
            if state["Status"] != "exited" or state["ExitCode"] != 0:
                problems.append(f"{name}: {state['Status']} exit {state['ExitCode']}")
        elif state["Status"] != "running" or health != "healthy":
            problems.append(f"{name}: {state['Status']}, health {health}")
        cfg = c["Config"]
        if c["Config"]["Image"] == IMAGE and (cfg.get("User") != "10001:10001" or not c["HostConfig"]["ReadonlyRootfs"]):
            problems.append(f"{name}: user {cfg.get('User')!r}, read-only root {c['HostConfig']['ReadonlyRootfs']}")
    if problems:
        raise Failed("; ".join(problems))
    return ", ".join(sorted(seen))


def check_send():
    out = ctl("send", "/samples/events.json", "--tenant", "acme", "--state", "/tmp/send.state",
              mounts=[f"{SAMPLES.parent}:/samples:ro"])
    return out.strip().splitlines()[-1] if out.strip() else "sent"


def check_outcomes():
    n = len(json.loads(SAMPLES.read_text()))

    def done():
        st = targets_status()
        counts = {t: (st.get(t) or {}).get("counts", {}) for t in TARGETS}
        return counts if all(c == {"succeeded": n} for c in counts.values()) else False

    wait("every sample event succeeded at every target", done, 240, 3)
    return f"{n} events x {len(TARGETS)} targets succeeded"


def check_sender():
    p = subprocess.run([str(ROOT / "scripts" / "compose.sh"), "run", "--rm", "demo-sender"],
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise Failed(f"demo-sender exited {p.returncode}: {(p.stdout + p.stderr).strip()[-800:]}")
    n = len(json.loads(SAMPLES.read_text()))
    st = targets_status()
    counts = {t: (st.get(t) or {}).get("counts", {}) for t in TARGETS}
    if any(c != {"succeeded": n} for c in counts.values()):
        raise Failed(f"counts changed: {counts}")
    last = [line for line in p.stdout.splitlines() if line.strip()]
    return (last[-1] if last else "exit 0") + "; counts unchanged"


def check_scrape():
    def all_up():
        active = prom("/api/v1/targets")["activeTargets"]
        up = {t["labels"].get("service"): t["health"] for t in active}
        return up if all(up.get(s) == "up" for s in SERVICES) else False

    up = wait("Prometheus scrapes every service", all_up, 90, 3)
    return ", ".join(f"{s}={up[s]}" for s in SERVICES)


def check_dashboard_names():
    names = set(prom("/api/v1/label/__name__/values"))
    used = {m for p in panels() for t in p["targets"] for m in re.findall(r"\bscimrelay_[a-z0-9_]+", t["expr"])}
    used |= set(re.findall(r"\bscimrelay_[a-z0-9_]+", json.dumps(json.loads(DASHBOARD.read_text())["templating"])))
    missing = sorted(used - names)
    if missing:
        raise Failed(f"named by the dashboard, absent from the scrape: {missing}")
    return f"{len(used)} metric names, all scraped"


def check_rules():
    groups = prom("/api/v1/rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    bad = [f"{r['name']}: {r.get('health')} {r.get('lastError', '')}" for r in rules if r.get("health") != "ok"]
    if len(rules) < 6 or bad:
        raise Failed(f"{len(rules)} rules loaded; unhealthy: {bad}")
    return f"{len(rules)} rules loaded, all healthy"


def user(uid: str, version: int, tenant: str = "acme") -> dict:
    return {"kind": "user.upserted", "tenant": tenant, "version": version, "user": {
        "id": uid, "userName": f"{uid}@example.com", "displayName": f"Drill {uid}",
        "name": {"givenName": "Drill", "familyName": uid},
        "emails": [{"value": f"{uid}@example.com", "type": "work", "primary": True}], "active": True}}


def send(events: list[dict], targets: list[str]):
    for e in events:
        e["targets"] = targets
    status, body = http("POST", f"{INGEST}/v1/events", events, {"authorization": f"Bearer {API_KEY}"})
    if status != 202:
        raise Failed(f"ingest answered {status}: {body}")


def fault(tenant: str, faults: dict):
    http("PUT", f"{SIM}/_admin/tenants/{tenant}/faults", faults)


def check_faults():
    # Quarantine: the provider revoked the token: 401s, three in a row open the breaker.
    fault("acme-aws", {"token_revoked": True})
    send([user(f"q-{i:03}", 1) for i in range(3)], ["aws-demo"])
    # Throttling: 2 requests/s for the GitHub tenant, 20 events at once.
    fault("acme-gh", {"rate_limit": {"per_sec": 2, "burst": 1}})
    send([user(f"t-{i:03}", 1) for i in range(20)], ["github-demo"])
    # Dead letters: every request answered 500; 10 attempts (compose/targets.yaml), then parked.
    fault("acme", {"error_rate": 1.0, "error_statuses": [500]})
    send([user(f"d-{i:03}", 1) for i in range(2)], ["scim-demo"])
    # Held: 4 deactivations of the 22 sample users against salesforce-demo's guard (10%).
    send([{"kind": "user.deactivated", "tenant": "acme", "version": 10, "user": {"id": u}}
          for u in ("u-001", "u-002", "u-004", "u-006")], ["salesforce-demo"])

    def in_status():
        st = targets_status()
        seen = {
            "aws-demo quarantined": st["aws-demo"].get("quarantined"),
            "github-demo throttle waits": st["github-demo"].get("throttleWaits", 0),
            "scim-demo dead-lettered": st["scim-demo"].get("counts", {}).get("dead-lettered", 0),
            "salesforce-demo held": st["salesforce-demo"].get("held", 0),
        }
        return seen if all(seen.values()) else False

    seen = wait("the faults show in `scimrelayctl status targets`", in_status, 180, 5)
    by_title = {p["title"]: p for p in panels()}

    def on_panels():
        values = {}
        for title, target in FAULT_PANELS.items():
            for t in by_title[title]["targets"]:
                result = prom("/api/v1/query", query=concrete(t["expr"]))["result"]
                v = [float(r["value"][1]) for r in result if r["metric"].get("target") == target]
                values[f"{title} [{target}]"] = max(v) if v else None
        return values if all(v and v > 0 for v in values.values()) else False

    values = wait("every fault panel shows its fault", on_panels, 120, 5)
    return f"status: {seen}; panels: " + ", ".join(f"{k} = {v:.3g}" for k, v in values.items())


def check_alerts():
    def states():
        alerts = prom("/api/v1/alerts")["alerts"]
        got = {(a["labels"]["alertname"], a["labels"].get("target")): a["state"] for a in alerts}
        want = {
            ("ScimrelayDeadLettersGrowing", "scim-demo"): {"firing"},
            ("ScimrelayHeldEventsWaiting", "salesforce-demo"): {"firing"},
            ("ScimrelayTargetQuarantined", "aws-demo"): {"pending", "firing"},
        }
        ok = all(got.get(k) in v for k, v in want.items())
        return {f"{a}[{t}]": s for (a, t), s in got.items()} if ok else False

    return str(wait("the fault alerts in Prometheus", states, 60, 5))


def check_dashboard_data():
    end = time.time()
    empty = []
    n = 0
    for p in panels():
        for t in p["targets"]:
            n += 1
            result = prom("/api/v1/query_range", query=concrete(t["expr"]), start=end - 600, end=end,
                          step="15")["result"]
            if not result:
                empty.append(f"{p['title']} [{t['refId']}]")
    if empty:
        raise Failed(f"no data over the last 10 minutes: {empty}")
    return f"{n} queries of {len(panels())} panels, all with data"


def check_traces():
    receiver = subprocess.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}",
                               "--filter", "label=com.docker.compose.service=otlp-receiver"],
                              capture_output=True, text=True, check=True).stdout.split()
    if receiver:
        def seen():
            logs = subprocess.run(["docker", "logs", receiver[0]], capture_output=True, text=True).stdout
            logs += subprocess.run(["docker", "logs", receiver[0]], capture_output=True, text=True).stderr
            found = sorted({s for s in SERVICES if f"service.name: Str({s})" in logs})
            return found if len(found) == len(SERVICES) else False

        found = wait("spans of every service at the OTLP receiver", seen, 60, 5)
        return f"OTLP receiver logged spans of {', '.join(found)}"
    _, body = http("GET", f"{JAEGER}/api/services")
    found = sorted(set(body.get("data") or []) & set(SERVICES))
    if len(found) != len(SERVICES):
        raise Failed(f"Jaeger knows {body.get('data')}")
    return f"Jaeger knows {', '.join(found)}"


CHECKS = [
    ("health", check_health),
    ("send", check_send),
    ("outcomes", check_outcomes),
    ("sender", check_sender),
    ("scrape", check_scrape),
    ("rules", check_rules),
    ("faults", check_faults),
    ("alerts", check_alerts),
    ("dashboard-names", check_dashboard_names),
    ("dashboard-data", check_dashboard_data),
    ("traces", check_traces),
]


def main() -> int:
    passed = failed = 0
    for name, check in CHECKS:
        started = time.monotonic()
        try:
            detail = check()
        except Exception as e:  # Failed, HTTP errors, timeouts: reported, the next check runs
            failed += 1
            print(f"FAIL {name} ({time.monotonic() - started:.0f} s): {e}", flush=True)
            continue
        passed += 1
        print(f"PASS {name} ({time.monotonic() - started:.0f} s): {detail}", flush=True)
    print(f"compose-test: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
