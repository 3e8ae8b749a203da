#!/usr/bin/env python3
"""helm-lint: the chart, the image and compose checked without a cluster or a Docker engine.

Run by `make helm-lint` with target/helm-venv's python (helm-python-sdk, kubernetes-validate, PyYAML).
Each check prints PASS or FAIL with its reasons; the last line is `helm-lint: N passed, M failed` and
the exit status is non-zero when anything failed.

What it proves:
  lint            Helm's own linter (strict: warnings are errors) finds nothing, default and production values.
  render          The chart renders (like `helm template`) with the default values, the production
                  example and a matrix of switches, and every manifest passes kubernetes-validate's
                  strict schema check for Kubernetes KUBE_VERSION (unknown fields rejected).
  schema          values.schema.json rejects typos and wrong types at every level.
  security        Every rendered Deployment: non-root, read-only root, no privilege escalation,
                  drop ALL, seccomp RuntimeDefault, /healthz + /readyz probes on a declared port
                  (HTTPS when the port speaks TLS; TCP checks when it demands client certificates,
                  which the kubelet cannot present), resources, containers bind 0.0.0.0 on the
                  port they declare.
  secrets         No secret value in values.yaml, no Secret rendered, credentials come from secretKeyRef.
  auth            Ingest and status start (a keys file, or the explicit unauthenticated opt-out) and
                  are authenticated with the default values; the keys file is a Secret mounted
                  without subPath (kubelet updates rotate keys); every *_FILE the services read
                  lies in a mounted volume; connectors reach status with a key when status
                  demands one, https when it speaks TLS, a client certificate under mutual TLS.
  networkpolicy   Every pod is selected by a policy; only ingest and status admit traffic from
                  outside the release.
  replicas        SCIMRELAY_CONNECTOR_REPLICAS equals the replica count (maxReplicas with an HPA).
  image           The binaries the Dockerfile builds = the ones it copies into the runtime image
                  = [[bin]] targets of the workspace, and every command of the chart and compose is one;
                  Dockerfile.local (the offline path) has the same runtime stage, line for line bar
                  its FROM, and nothing the classic builder lacks (no `# syntax`, no `RUN --mount`).
  env             Every SCIMRELAY_*/OTEL_* variable the chart or compose sets is read by that
                  binary's crates, each service gets every variable it needs in a container, chart and
                  compose set the same variables per service, and the secrets the targets files name
                  are provided.
  docs            The chart README's values table lists every key of values.yaml, and no other.
  compose         docker-compose.yml parses and is structurally complete (images, commands, mounts,
                  dependencies, Jaeger with OTLP, RabbitMQ with management); every long-running
                  service has a health check; ports are published on 127.0.0.1 only;
                  docker-compose.local.yml only swaps images of services that exist; Prometheus
                  (deploy/prometheus/prometheus.yml) scrapes exactly the services that serve /metrics,
                  on the ports they bind.
"""

from __future__ import annotations

import copy
import json
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "scimrelay"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
# Services of docker-compose.yml without a health check, with the reason.
NO_HEALTHCHECK = {
    "demo-sender": "one shot: it exits 0 when the events are sent",
    # No registry here serves its image, so no check command could ever be tried against it; the
    # local path's OTLP receiver (docker-compose.local.yml) has one.
    "jaeger": "untestable here",
}
# Services docker-compose.local.yml may add: the OTLP receiver standing in for Jaeger.
LOCAL_ONLY_SERVICES = {"otlp-receiver"}
KUBE_VERSION = "1.30.0"
RELEASE = "scimrelay"
NAMESPACE = "scimrelay"

# values key -> binary (the chart runs `<name>-connector` for each entry of `connectors`), and
# binary -> crates whose sources it runs (for the env check).
CONNECTORS = {
    name: f"{name}-connector"
    for name in (yaml.safe_load((CHART / "values.yaml").read_text()) or {}).get("connectors", {})
}
# Where each service serves /metrics: the variable holding its HTTP address.
METRICS_ADDR_ENV = {
    "scimrelay-ingest": "SCIMRELAY_INGEST_HTTP_ADDR",
    "scimrelay-status": "SCIMRELAY_STATUS_HTTP_ADDR",
    **{b: "SCIMRELAY_CONNECTOR_HTTP_ADDR" for b in CONNECTORS.values()},
}
# core's modules only the servers run (API keys, server TLS): their variables are read by ingest
# and status, not by every binary that links core. "core-server" is their pseudo-crate.
SERVER_ONLY_SOURCES = {"core/src/auth.rs", "core/src/tls.rs"}
CRATES_OF = {
    "scimrelay-ingest": ["core", "core-server", "ingest"],
    "scimrelay-status": ["core", "core-server", "status"],
    "scimrelay-sim": ["sim"],
    "scimrelayctl": ["core", "cli"],
    **{b: ["core", "scim", "connector", f"provider-{k}"] for k, b in CONNECTORS.items()},
}
# Variables a service must get in a container (its default binds 127.0.0.1 or is a local path).
REQUIRED_ENV = {
    "scimrelay-ingest": {"SCIMRELAY_AMQP_URL", "SCIMRELAY_CONFIG", "SCIMRELAY_INGEST_HTTP_ADDR",
                         "SCIMRELAY_INGEST_GRPC_ADDR"},
    "scimrelay-status": {"SCIMRELAY_AMQP_URL", "SCIMRELAY_STATUS_DB", "SCIMRELAY_STATUS_GRPC_ADDR",
                         "SCIMRELAY_STATUS_HTTP_ADDR"},
    **{b: {"SCIMRELAY_AMQP_URL", "SCIMRELAY_CONFIG", "SCIMRELAY_CONNECTOR_HTTP_ADDR",
           "SCIMRELAY_CONNECTOR_REPLICAS", "SCIMRELAY_STATUS_URL"} for b in CONNECTORS.values()},
}
# Variables the services read that deployments may leave to their defaults, with the reason.
OPTIONAL_ENV = {
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",  # OTEL_EXPORTER_OTLP_ENDPOINT covers it
    "OTEL_SDK_DISABLED",  # an operator's switch, not a deployment's
    "SCIMRELAY_AMQP_CA_FILE",  # only for an amqps:// broker with a private CA
    # TLS is a deployment's choice (the chart's tls.*; compose runs plain inside its network)
    "SCIMRELAY_TLS_CERT_FILE", "SCIMRELAY_TLS_KEY_FILE", "SCIMRELAY_TLS_CLIENT_CA_FILE",
    "SCIMRELAY_STATUS_CA_FILE", "SCIMRELAY_STATUS_CLIENT_CERT_FILE", "SCIMRELAY_STATUS_CLIENT_KEY_FILE",
}
# Variables of which a deployment must set one (either spelling), per binary, with the reason.
ONE_OF_ENV = {
    # they bind 0.0.0.0: without a keys file they refuse to start unless explicitly unauthenticated
    **{b: [("SCIMRELAY_API_KEYS_FILE", "SCIMRELAY_ALLOW_UNAUTHENTICATED")]
       for b in ("scimrelay-ingest", "scimrelay-status")},
    # status demands a key in every deployment checked here (production chart, compose)
    **{b: [("SCIMRELAY_STATUS_API_KEY", "SCIMRELAY_STATUS_API_KEY_FILE")] for b in CONNECTORS.values()},
}
ENV_NAME = re.compile(r'"((?:SCIMRELAY|OTEL)_[A-Z0-9_]+)"')


# ---------------------------------------------------------------------------------------------
# Helpers


def helm():
    import helm_python  # imported late so `--help` works without the venv

    return helm_python


def load_values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def default_values() -> dict[str, Any]:
    return load_values(CHART / "values.yaml")


def production_values() -> dict[str, Any]:
    return load_values(CHART / "examples" / "production.yaml")


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def render(values: dict[str, Any] | None = None, chart: Path | None = None) -> list[dict[str, Any]]:
    """Renders like `helm template` and returns the parsed manifests (NOTES.txt excluded)."""
    with helm().Chart.load(str(chart or CHART)) as ch:
        out = ch.render(values or {}, name=RELEASE, namespace=NAMESPACE)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("__source__", path)
                docs.append(doc)
    return docs


def strip(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k != "__source__"}


def of_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def container_env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def binary_of(container: dict) -> str:
    cmd = container.get("command") or container.get("args") or []
    return Path(cmd[0]).name if cmd else ""


# Rendering variants: each switch of the chart is on in at least one of them.
def variants() -> dict[str, dict[str, Any]]:
    all_on = {
        "connectors": {k: {"enabled": True} for k in CONNECTORS},
    }
    return {
        "default": {},
        "production": production_values(),
        "all-connectors+hpa+sqlite-pvc": deep_merge(all_on, {
            "ingest": {"autoscaling": {"enabled": True}},
            "connectors": {"github": {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3},
                                      "pdb": {"enabled": True}}},
            "status": {"persistence": {"enabled": True, "storageClass": "fast"}, "pdb": {"enabled": True}},
            "serviceMonitor": {"enabled": True},
            "otel": {"endpoint": "http://jaeger-collector:4317"},
            "targets": {"secretFiles": [{"name": "tok", "mountPath": "/run/secrets/tok"}],
                        "envFromSecrets": ["env-tokens"]},
            "imagePullSecrets": [{"name": "regcred"}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        }),
        "tls+unauthenticated+servicemonitor": {
            "auth": {"allowUnauthenticated": True, "keys": {"existingSecret": ""}},
            "tls": {"existingSecret": "scimrelay-tls", "serverCA": {"existingSecretKey": ""}},
            "serviceMonitor": {"enabled": True},
        },
        "mutual-tls+own-cas+amqp-ca": {
            "tls": {"existingSecret": "scimrelay-tls", "mutual": True,
                    "clientCA": {"existingSecret": "clients-ca", "existingSecretKey": "bundle.pem"},
                    "serverCA": {"existingSecret": "servers-ca"},
                    "connectorCert": {"existingSecret": "scimrelay-connector-tls"}},
            "amqp": {"ca": {"existingSecret": "rabbitmq-ca"}},
            "connectors": {"github": {"enabled": True}},
            "targets": {"extraVolumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca"}}],
                        "extraVolumeMounts": [{"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True}]},
        },
        "amqp-url+no-networkpolicy+no-sa": {
            "amqp": {"existingSecret": "", "url": "amqp://rabbitmq:5672/%2f"},
            "networkPolicy": {"enabled": False},
            "serviceAccount": {"create": False, "name": "existing"},
            "targets": {"existingConfigMap": "my-targets"},
            "status": {"database": {"url": "postgres://scimrelay@pg:5432/scimrelay"}, "replicaCount": 3},
        },
    }


# ---------------------------------------------------------------------------------------------
# Checks: each returns a list of failure messages (empty = pass).


def check_lint() -> list[str]:
    errs = []
    for label, values in (("default", None), ("production", production_values())):
        report = helm().lint(str(CHART), values, strict=True, kube_version=f"v{KUBE_VERSION}",
                             namespace=NAMESPACE)
        for m in report.get("messages", []):
            errs.append(f"{label}: {m.get('path')}: {m.get('error')} (severity {m.get('severity')})")
        errs += [f"{label}: {e}" for e in report.get("errors", [])]
    return errs


def validate_manifest(doc: dict) -> str | None:
    """kubernetes-validate strict; the one CRD kind (ServiceMonitor) gets a structural check."""
    import kubernetes_validate

    if doc.get("apiVersion", "").startswith("monitoring.coreos.com/"):
        spec = doc.get("spec", {})
        ok = (doc.get("kind") == "ServiceMonitor" and spec.get("selector", {}).get("matchLabels")
              and all(e.get("port") and e.get("path") for e in spec.get("endpoints", [])))
        return None if ok else "ServiceMonitor needs spec.selector.matchLabels and endpoints with port and path"
    try:
        kubernetes_validate.validate(strip(doc), KUBE_VERSION, strict=True)
    except Exception as e:  # ValidationError, SchemaNotFoundError, InvalidSchemaError
        return f"{type(e).__name__}: {getattr(e, 'message', e)}"
    return None


def check_render() -> list[str]:
    errs = []
    for label, values in variants().items():
        try:
            docs = render(values)
        except Exception as e:
            errs.append(f"{label}: render failed: {e}")
            continue
        if not of_kind(docs, "Deployment"):
            errs.append(f"{label}: no Deployment rendered")
        names = [(d["kind"], d["metadata"]["name"]) for d in docs]
        errs += [f"{label}: duplicate {k}/{n}" for k, n in set(names) if names.count((k, n)) > 1]
        for d in docs:
            problem = validate_manifest(d)
            if problem:
                errs.append(f"{label}: {d['__source__']} {d.get('kind')}/{d['metadata'].get('name')}: {problem}")
    return errs


# Values that must be rejected, each with why.
BAD_VALUES: dict[str, dict[str, Any]] = {
    "typo at the top level": {"ingets": {"replicaCount": 2}},
    "typo in a nested key": {"ingest": {"replicaCont": 2}},
    "typo in a connector switch": {"connectors": {"github": {"enabeld": True}}},
    "unknown connector": {"connectors": {"okta": {"enabled": True}}},
    "replica count as a string": {"ingest": {"replicaCount": "two"}},
    "enabled as a string": {"connectors": {"aws": {"enabled": "yes"}}},
    "zero replicas": {"connectors": {"scim": {"replicaCount": 0}}},
    "port out of range": {"ingest": {"service": {"httpPort": 70000}}},
    "log format not text/json": {"logging": {"format": "xml"}},
    "OTLP endpoint not a URL": {"otel": {"endpoint": "jaeger:4317"}},
    "AMQP URL with another scheme": {"amqp": {"existingSecret": "", "url": "http://rabbitmq"}},
    "secretFiles without mountPath": {"targets": {"secretFiles": [{"name": "x"}]}},
    "a secret value where a reference belongs": {"amqp": {"password": "hunter2"}},
    "typo under auth": {"auth": {"allowUnauthenticate": True}},
    "typo in auth's keys Secret": {"auth": {"keys": {"existingSecrt": "api-keys"}}},
    "an API key where its Secret belongs": {"auth": {"connectorKey": {"apiKey": "srk_x"}}},
    "allowUnauthenticated as a string": {"auth": {"allowUnauthenticated": "true"}},
    "typo under tls": {"tls": {"mutal": True}},
    "typo in tls's client CA": {"tls": {"clientCA": {"existingSecretkey": "ca.crt"}}},
    "tls.mutual as a string": {"tls": {"mutual": "yes"}},
    "typo in amqp's CA": {"amqp": {"ca": {"secret": "rabbitmq-ca"}}},
    "extraVolumeMounts without mountPath": {"targets": {"extraVolumeMounts": [{"name": "ca"}]}},
    "extraVolumes without name": {"targets": {"extraVolumes": [{"configMap": {"name": "ca"}}]}},
}
# Values the schema allows but the templates refuse, with why.
BAD_COMBINATIONS: dict[str, dict[str, Any]] = {
    "several status replicas on SQLite": {"status": {"replicaCount": 2}},
    "no AMQP secret and no URL": {"amqp": {"existingSecret": "", "url": ""}},
    "no API keys and authentication not turned off": {"auth": {"keys": {"existingSecret": ""}}},
    "API keys but no key for the connectors": {"auth": {"connectorKey": {"existingSecret": ""}}},
    "mutual TLS without TLS": {"tls": {"mutual": True}},
    "mutual TLS without the connectors' certificate": {"tls": {"existingSecret": "scimrelay-tls", "mutual": True}},
}


def check_schema() -> list[str]:
    errs = []
    for why, values in {**BAD_VALUES, **BAD_COMBINATIONS}.items():
        try:
            render(values)
        except Exception as e:
            expected = "HelmValuesError" if why in BAD_VALUES else "HelmRenderError"
            if type(e).__name__ != expected and why in BAD_VALUES:
                errs.append(f"{why}: rejected, but by {type(e).__name__} instead of the schema: {e}")
            continue
        errs.append(f"{why}: accepted {json.dumps(values)}")
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(node, path):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
                errs.append(f"schema object {path or '/'} allows unknown keys (additionalProperties is not false)")
            for k, v in node.items():
                walk(v, f"{path}/{k}")

    walk(schema, "")
    return errs


def deployments_of(docs):
    for d in of_kind(docs, "Deployment"):
        yield d, d["spec"]["template"]["spec"]


def check_security() -> list[str]:
    errs = []
    for label, values in variants().items():
        docs = render(values)
        for d, pod in deployments_of(docs):
            name = f"{label}: {d['metadata']['name']}"
            psc = pod.get("securityContext", {})
            if psc.get("runAsNonRoot") is not True:
                errs.append(f"{name}: pod securityContext.runAsNonRoot is not true")
            if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                errs.append(f"{name}: pod seccompProfile is not RuntimeDefault")
            if pod.get("automountServiceAccountToken") is not False:
                errs.append(f"{name}: service account token is mounted (no service calls the API)")
            mounts_needed = set()
            for c in pod["containers"]:
                sc = c.get("securityContext", {})
                cname = f"{name}/{c['name']}"
                for key, want in (("runAsNonRoot", True), ("readOnlyRootFilesystem", True),
                                  ("allowPrivilegeEscalation", False)):
                    if sc.get(key) is not want:
                        errs.append(f"{cname}: securityContext.{key} is not {want}")
                if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                    errs.append(f"{cname}: capabilities.drop is not [ALL]")
                if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                    errs.append(f"{cname}: seccompProfile is not RuntimeDefault")
                ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
                env = container_env(c)
                # ingest's health endpoints share its API listener; status's have their own plain one
                tls_http = binary_of(c) == "scimrelay-ingest" and "SCIMRELAY_TLS_CERT_FILE" in env
                mutual = tls_http and "SCIMRELAY_TLS_CLIENT_CA_FILE" in env
                for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                                    ("readinessProbe", "/readyz")):
                    check = c.get(probe, {})
                    if mutual:
                        port = check.get("tcpSocket", {}).get("port")
                        if "tcpSocket" not in check:
                            errs.append(f"{cname}: {probe} is not a tcpSocket check, and under mutual TLS "
                                        "the kubelet (no client certificate) cannot pass the handshake")
                        elif port not in ports and port not in ports.values():
                            errs.append(f"{cname}: {probe} port {port} is not a declared port")
                        continue
                    get = check.get("httpGet", {})
                    scheme = get.get("scheme", "HTTP")
                    if get.get("path") != path:
                        if probe != "startupProbe" or check:
                            errs.append(f"{cname}: {probe} is not an httpGet on {path}")
                    elif get.get("port") not in ports and get.get("port") not in ports.values():
                        errs.append(f"{cname}: {probe} port {get.get('port')} is not a declared port")
                    elif scheme != ("HTTPS" if tls_http else "HTTP"):
                        errs.append(f"{cname}: {probe} uses {scheme} on a listener that speaks "
                                    f"{'TLS' if tls_http else 'plain HTTP'}")
                if not c.get("resources", {}).get("requests"):
                    errs.append(f"{cname}: no resource requests")
                # Every *_ADDR must bind all interfaces on a port the container declares.
                for var, e in env.items():
                    if var.endswith("_ADDR"):
                        host, _, port = e.get("value", "").rpartition(":")
                        if host != "0.0.0.0" or int(port or 0) not in ports.values():
                            errs.append(f"{cname}: {var}={e.get('value')} must be 0.0.0.0:<declared port>")
                db = env.get("SCIMRELAY_STATUS_DB", {}).get("value", "")
                if db.startswith("/") or db.startswith("sqlite:"):
                    mounts_needed.add(str(Path(db.removeprefix("sqlite://")).parent))
                mounted = {m["mountPath"] for m in c.get("volumeMounts", [])}
                if "/tmp" not in mounted:
                    errs.append(f"{cname}: no writable /tmp with a read-only root filesystem")
                for m in mounts_needed - mounted:
                    errs.append(f"{cname}: SQLite directory {m} is not a mounted volume (root is read-only)")
    return errs


CREDENTIALS_IN_URL = re.compile(r"://[^/@\s:]+:[^/@\s]+@")
SECRETISH = re.compile(r"^(?!existing)\w*(password|passwd|secret|token|apikey|api_key|private_?key)$", re.I)


def check_secrets() -> list[str]:
    errs = []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else k)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
        elif isinstance(node, str) and node:
            if SECRETISH.search(path.split(".")[-1]):
                errs.append(f"values {path} holds a value; reference a Secret instead")
            if CREDENTIALS_IN_URL.search(node):
                errs.append(f"values {path} holds a URL with credentials")

    for label, values in (("values.yaml", default_values()), ("production.yaml", production_values())):
        v = copy.deepcopy(values)
        v.get("targets", {}).pop("file", None)  # names of env vars and files only, checked below
        walk(v, "")
        targets_file = (values.get("targets") or {}).get("file", "")
        for line in targets_file.splitlines():
            m = re.match(r"\s*(token|password|client_secret|private_key)\s*:\s*(\S.*)$", line)
            if m and not m.group(2).startswith("{"):
                errs.append(f"{label} targets.file: {m.group(1)} holds a literal, not {{env: ...}} / {{file: ...}}")
        for d in render(values):
            if d.get("kind") == "Secret":
                errs.append(f"{label}: renders a Secret ({d['metadata']['name']})")
            for _, pod in deployments_of([d]):
                for c in pod["containers"]:
                    env = container_env(c)
                    for var in ("SCIMRELAY_AMQP_URL", "SCIMRELAY_STATUS_DB"):
                        if CREDENTIALS_IN_URL.search(env.get(var, {}).get("value", "")):
                            errs.append(f"{label}: {c['name']} {var} carries credentials in plain text")
                    if "value" in env.get("SCIMRELAY_STATUS_API_KEY", {}):
                        errs.append(f"{label}: {c['name']} SCIMRELAY_STATUS_API_KEY is a plain value, not a Secret")
    amqp = render({})
    for _, pod in deployments_of(amqp):
        env = container_env(pod["containers"][0])
        if "secretKeyRef" not in env["SCIMRELAY_AMQP_URL"].get("valueFrom", {}):
            errs.append("default values: SCIMRELAY_AMQP_URL does not come from a Secret")
    return errs


def mount_of(container: dict, path: str) -> dict | None:
    """The volumeMount a file path lies in (the deepest one; a file mounted by subPath counts), or None."""
    best = None
    for m in container.get("volumeMounts", []):
        root = m["mountPath"].rstrip("/") + "/"
        if (path.startswith(root) or path == m["mountPath"]) and (
                best is None or len(m["mountPath"]) > len(best["mountPath"])):
            best = m
    return best


def check_auth() -> list[str]:
    errs = []
    for label, values in variants().items():
        docs = render(values)
        containers = [(d["metadata"]["name"], p, c) for d, p in deployments_of(docs) for c in p["containers"]]
        status_env = next((container_env(c) for _, _, c in containers
                           if binary_of(c) == "scimrelay-status"), {})
        for name, pod, c in containers:
            cname, binary, env = f"{label}: {name}/{c['name']}", binary_of(c), container_env(c)
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for var, e in env.items():
                if not (var.startswith("SCIMRELAY_") and var.endswith("_FILE")) or "value" not in e:
                    continue
                m = mount_of(c, e["value"])
                if m is None:
                    errs.append(f"{cname}: {var}={e['value']} lies in no mounted volume (root is read-only)")
                elif var == "SCIMRELAY_API_KEYS_FILE":
                    if m.get("subPath"):
                        errs.append(f"{cname}: the keys file is mounted with subPath: the kubelet never "
                                    "updates it, so rotating keys would need a restart")
                    if "secret" not in volumes.get(m["name"], {}):
                        errs.append(f"{cname}: the keys file does not come from a Secret")
            if binary in ("scimrelay-ingest", "scimrelay-status"):
                if "SCIMRELAY_API_KEYS_FILE" not in env and \
                        env.get("SCIMRELAY_ALLOW_UNAUTHENTICATED", {}).get("value") != "true":
                    errs.append(f"{cname}: binds 0.0.0.0 without SCIMRELAY_API_KEYS_FILE or "
                                "SCIMRELAY_ALLOW_UNAUTHENTICATED=true: it would refuse to start")
                if bool(env.get("SCIMRELAY_TLS_CERT_FILE")) != bool(env.get("SCIMRELAY_TLS_KEY_FILE")):
                    errs.append(f"{cname}: SCIMRELAY_TLS_CERT_FILE and _KEY_FILE go together")
            if binary in CONNECTORS.values():
                url = env.get("SCIMRELAY_STATUS_URL", {}).get("value", "")
                want = "https://" if "SCIMRELAY_TLS_CERT_FILE" in status_env else "http://"
                if not url.startswith(want):
                    errs.append(f"{cname}: SCIMRELAY_STATUS_URL={url}, but status speaks "
                                f"{'TLS' if want == 'https://' else 'plain gRPC'}")
                if "SCIMRELAY_API_KEYS_FILE" in status_env and not (
                        {"SCIMRELAY_STATUS_API_KEY", "SCIMRELAY_STATUS_API_KEY_FILE"} & set(env)):
                    errs.append(f"{cname}: status demands an API key and the connector has none")
                if "SCIMRELAY_TLS_CLIENT_CA_FILE" in status_env and not (
                        "SCIMRELAY_STATUS_CLIENT_CERT_FILE" in env and "SCIMRELAY_STATUS_CLIENT_KEY_FILE" in env):
                    errs.append(f"{cname}: status demands a client certificate and the connector has none")
    # secure by default: the default values authenticate
    for d, pod in deployments_of(render({})):
        for c in pod["containers"]:
            env = container_env(c)
            if binary_of(c) in ("scimrelay-ingest", "scimrelay-status") and (
                    "SCIMRELAY_API_KEYS_FILE" not in env or "SCIMRELAY_ALLOW_UNAUTHENTICATED" in env):
                errs.append(f"default values: {d['metadata']['name']} runs without authentication")
    return errs


def matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def check_networkpolicy() -> list[str]:
    errs = []
    for label, values in (("default", {}), ("production", production_values())):
        docs = render(values)
        policies = of_kind(docs, "NetworkPolicy")
        for d, pod in deployments_of(docs):
            labels = d["spec"]["template"]["metadata"]["labels"]
            component = labels.get("app.kubernetes.io/component")
            mine = [p for p in policies if matches(p["spec"]["podSelector"], labels)]
            if not mine:
                errs.append(f"{label}: {component} is selected by no NetworkPolicy")
                continue
            for p in mine:
                for rule in p["spec"].get("ingress", []):
                    peers = rule.get("from")
                    if component in ("ingest", "status"):
                        continue  # the entry points: clients from anywhere, or from clientsFrom
                    if not peers:
                        errs.append(f"{label}: {component} admits traffic from anywhere via {p['metadata']['name']}")
                        continue
                    allowed_outside = (values.get("networkPolicy") or {}).get("metricsFrom", [])
                    for peer in peers:
                        in_release = peer.get("podSelector", {}).get("matchLabels", {}) == {
                            "app.kubernetes.io/instance": RELEASE} and "namespaceSelector" not in peer
                        if not in_release and peer not in allowed_outside:
                            errs.append(f"{label}: {component} admits {peer} from outside the release")
                        if peer in allowed_outside and [pp.get("port") for pp in rule.get("ports", [])] != ["http"]:
                            errs.append(f"{label}: {component}: metrics scrapers may reach more than the http port")
        services = {d["metadata"]["name"] for d in of_kind(docs, "Service")}
        for s in (f"{RELEASE}-ingest", f"{RELEASE}-status"):
            if s not in services:
                errs.append(f"{label}: Service {s} missing")
    return errs


def check_replicas() -> list[str]:
    errs = []
    for label, values in variants().items():
        docs = render(values)
        hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(docs, "HorizontalPodAutoscaler")}
        for d, pod in deployments_of(docs):
            c = pod["containers"][0]
            if binary_of(c) not in CONNECTORS.values():
                continue
            got = container_env(c).get("SCIMRELAY_CONNECTOR_REPLICAS", {}).get("value")
            hpa = hpas.get(d["metadata"]["name"])
            want = hpa["spec"]["maxReplicas"] if hpa else d["spec"].get("replicas")
            if hpa and "replicas" in d["spec"]:
                errs.append(f"{label}: {d['metadata']['name']} sets replicas and has an HPA (they fight)")
            if str(want) != str(got):
                errs.append(f"{label}: {d['metadata']['name']}: SCIMRELAY_CONNECTOR_REPLICAS={got}, replicas {want}")
    # one Deployment per enabled connector, none for a disabled one
    for kind, binary in CONNECTORS.items():
        for enabled in (True, False):
            docs = render({"connectors": {k: {"enabled": (k == kind) == enabled} for k in CONNECTORS}})
            got = {binary_of(p["containers"][0]) for _, p in deployments_of(docs)} & set(CONNECTORS.values())
            want = {binary} if enabled else set(CONNECTORS.values()) - {binary}
            if got != want:
                errs.append(f"connectors.{kind}.enabled={enabled}: connector Deployments {sorted(got)}, want {sorted(want)}")
    return errs


def dockerfile_binaries(text: str) -> tuple[set[str], set[str]]:
    """(binaries built by `cargo build --bin`, binaries copied into the runtime image's PATH)."""
    joined = re.sub(r"\\\n", " ", text)
    built: set[str] = set()
    for line in joined.splitlines():
        if "cargo build" in line:
            built |= set(re.findall(r"--bin[ =]([A-Za-z0-9_-]+)", line))
    copied: set[str] = set()
    stages = re.split(r"(?m)^FROM\s", joined)
    runtime = stages[-1] if len(stages) > 1 else ""
    for line in runtime.splitlines():
        m = re.match(r"\s*COPY\s+--from=\S+\s+(.+)$", line)
        if m:
            parts = m.group(1).split()
            if parts[-1].rstrip("/") in ("/usr/local/bin", "/usr/bin", "/bin"):
                copied |= {Path(p).name for p in parts[:-1]}
    return built, copied


def workspace_bins() -> set[str]:
    bins = set()
    for manifest in ROOT.glob("crates/*/Cargo.toml"):
        bins |= set(re.findall(r'\[\[bin\]\]\s*\nname\s*=\s*"([^"]+)"', manifest.read_text()))
    return bins


def chart_commands() -> set[str]:
    docs = render({"connectors": {k: {"enabled": True} for k in CONNECTORS}})
    return {binary_of(c) for _, p in deployments_of(docs) for c in p["containers"]}


def compose_commands(compose: dict) -> dict[str, str]:
    out = {}
    for name, svc in compose["services"].items():
        if "scimrelay" not in str(svc.get("image", "")):
            continue
        cmd = svc.get("entrypoint") or svc.get("command") or []
        cmd = cmd.split() if isinstance(cmd, str) else cmd
        out[name] = Path(cmd[0]).name if cmd else ""
    return out


def check_image(dockerfile: Path = DOCKERFILE, compose_path: Path = COMPOSE) -> list[str]:
    errs = []
    text = dockerfile.read_text()
    built, copied = dockerfile_binaries(text)
    if not built:
        errs.append("Dockerfile: no `cargo build --bin` found")
    if built != copied:
        errs.append(f"Dockerfile: built {sorted(built)} but copied into the image {sorted(copied)}")
    unknown = built - workspace_bins()
    if unknown:
        errs.append(f"Dockerfile builds {sorted(unknown)}, which no crate declares as [[bin]]")
    for b in sorted(chart_commands() - copied):
        errs.append(f"chart runs {b!r}, which the image does not contain")
    compose = load_compose(compose_path)
    for svc, b in compose_commands(compose).items():
        if b not in copied:
            errs.append(f"compose service {svc} runs {b!r}, which the image does not contain")
    stages = re.findall(r"(?m)^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text)
    if len(stages) < 2:
        errs.append("Dockerfile is not multi-stage")
    if "protobuf-compiler" not in text:
        errs.append("Dockerfile builder lacks protobuf-compiler (tonic-prost-build needs protoc)")
    users = re.findall(r"(?m)^USER\s+(\S+)", text)
    if not users or users[-1].split(":")[0] in ("0", "root") or not users[-1].split(":")[0].isdigit():
        errs.append("Dockerfile: the runtime stage must end with a numeric non-root USER (runAsNonRoot)")
    uid = users[-1].split(":")[0] if users else ""
    if uid and f"runAsUser: {uid}" not in (CHART / "templates" / "_helpers.tpl").read_text():
        errs.append(f"chart runAsUser differs from the image's USER {uid}")
    local = dockerfile.parent / "Dockerfile.local"
    if local.exists():
        errs += check_local_dockerfile(text, local.read_text())
    return errs


def runtime_stage(text: str) -> tuple[str, list[str]]:
    """(FROM line, the lines after it) of a Dockerfile's last stage."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(r"FROM\s", line)]
    if not starts:
        return "", []
    return lines[starts[-1]], lines[starts[-1] + 1:]


def check_local_dockerfile(public: str, local: str) -> list[str]:
    """Dockerfile.local: the public runtime stage verbatim (bar FROM), buildable by the classic builder."""
    errs = []
    (pub_from, pub_body), (loc_from, loc_body) = runtime_stage(public), runtime_stage(local)
    if pub_body != loc_body:
        diff = [f"{a!r} vs {b!r}" for a, b in zip(pub_body, loc_body) if a != b][:3]
        errs.append(f"Dockerfile.local: runtime stage differs from Dockerfile's "
                    f"({len(pub_body)} vs {len(loc_body)} lines; {diff})")
    if pub_from.split()[-2:] != loc_from.split()[-2:]:
        errs.append(f"Dockerfile.local: runtime stage {loc_from!r} is not named like {pub_from!r}")
    if re.search(r"(?m)^#\s*syntax=", local):
        errs.append("Dockerfile.local names a BuildKit frontend (# syntax=): the offline build cannot fetch it")
    if re.search(r"(?m)^RUN\s+--mount", local):
        errs.append("Dockerfile.local uses RUN --mount, which the classic builder lacks")
    pulled = [f for f in re.findall(r"(?m)^FROM\s+(\S+)", local) if f != "scratch" and not f.startswith("local/")]
    if pulled:
        errs.append(f"Dockerfile.local starts from {pulled}: only scratch and local/ (bootstrapped) images exist offline")
    return errs


def load_compose(path: Path = COMPOSE) -> dict:
    return yaml.safe_load(path.read_text())  # PyYAML resolves the `<<` merge keys


def rust_env_reads() -> dict[str, set[str]]:
    """crate dir name -> SCIMRELAY_*/OTEL_* names its non-test sources read."""
    out: dict[str, set[str]] = {}
    for src in ROOT.glob("crates/*/src/**/*.rs"):
        text = src.read_text()
        text = text.split("#[cfg(test)]", 1)[0]  # unit tests sit at the bottom (style.md)
        if src.name == "tests.rs":
            continue
        rel = src.relative_to(ROOT / "crates")
        crate = "core-server" if rel.as_posix() in SERVER_ONLY_SOURCES else rel.parts[0]
        out.setdefault(crate, set()).update(ENV_NAME.findall(text))
    return out


def reads_of(binary: str, reads: dict[str, set[str]]) -> set[str]:
    return set().union(*(reads.get(c, set()) for c in CRATES_OF[binary]))


def relevant(names) -> set[str]:
    return {n for n in names if n.startswith(("SCIMRELAY_", "OTEL_"))}


def chart_env(values) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for _, p in deployments_of(render(values)):
        for c in p["containers"]:
            out.setdefault(binary_of(c), set()).update(container_env(c))
    return out


def compose_env(compose) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    cmds = compose_commands(compose)
    for svc, binary in cmds.items():
        env = compose["services"][svc].get("environment") or {}
        names = set(env) if isinstance(env, dict) else {e.split("=", 1)[0] for e in env}
        out.setdefault(binary, set()).update(names)
    return out


def env_refs(targets_yaml: str) -> tuple[set[str], set[str]]:
    """({ env: NAME } names, { file: PATH } and tls ca_file paths) a targets file refers to."""
    return (set(re.findall(r"\{\s*env:\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}", targets_yaml)),
            set(re.findall(r"\{\s*file:\s*(\S+?)\s*\}", targets_yaml))
            | set(re.findall(r"\bca_file:\s*[\"']?([^\s,}\"']+)", targets_yaml)))


def check_env(compose_path: Path = COMPOSE) -> list[str]:
    errs = []
    reads = rust_env_reads()
    all_reads = set().union(*reads.values())
    if "SCIMRELAY_CONNECTOR_REPLICAS" not in all_reads:
        errs.append("no crate reads SCIMRELAY_CONNECTOR_REPLICAS: the source scan is broken")
    compose = load_compose(compose_path)
    prod = production_values()
    sources = {"chart (production)": chart_env(prod), "compose": compose_env(compose)}
    for where, per_binary in sources.items():
        for binary, names in per_binary.items():
            if binary not in CRATES_OF:
                errs.append(f"{where}: unknown binary {binary!r}")
                continue
            reads_here = reads_of(binary, reads)
            for n in sorted(relevant(names) - reads_here):
                errs.append(f"{where}: {binary} gets {n}, which it never reads")
            for n in sorted(REQUIRED_ENV.get(binary, set()) - names):
                errs.append(f"{where}: {binary} lacks {n} (needed in a container)")
            covered = set(names)
            for group in ONE_OF_ENV.get(binary, []):
                if covered & set(group):
                    covered |= set(group)
                else:
                    errs.append(f"{where}: {binary} lacks one of {list(group)} (needed in a container)")
            # deployments set everything the service reads, bar the documented optional ones
            for n in sorted(relevant(reads_here) - covered - OPTIONAL_ENV):
                if binary in ("scimrelay-sim", "scimrelayctl"):  # demo tools: flags do as well
                    continue
                errs.append(f"{where}: {binary} reads {n}, which is not set (add it or list it in OPTIONAL_ENV)")
    chart, comp = sources["chart (production)"], sources["compose"]

    def comparable(binary, names):  # optional ones left out, either spelling of a one-of group alike
        out = relevant(names) - OPTIONAL_ENV
        for group in ONE_OF_ENV.get(binary, []):
            if out & set(group):
                out = (out - set(group)) | {" or ".join(group)}
        return out

    for binary in sorted(set(chart) & set(comp)):
        a, b = comparable(binary, chart[binary]), comparable(binary, comp[binary])
        if a != b:
            errs.append(f"{binary}: chart sets {sorted(a - b)} that compose does not; compose sets {sorted(b - a)} that the chart does not")
    for binary in sorted(set(chart) - set(comp)):
        errs.append(f"{binary}: in the chart but not in compose")
    # the secrets a targets file names reach the connectors
    compose_targets = (compose_path.parent / "compose" / "targets.yaml")
    if compose_targets.exists():
        want_env, want_files = env_refs(compose_targets.read_text())
        for binary in CONNECTORS.values():
            missing = want_env - comp.get(binary, set())
            if missing:
                errs.append(f"compose: {binary} lacks {sorted(missing)} named by compose/targets.yaml")
        if want_files:
            errs.append(f"compose: targets.yaml names files {sorted(want_files)}; compose mounts none")
    want_env, want_files = env_refs(prod["targets"]["file"])
    if want_env and not prod["targets"].get("envFromSecrets"):
        errs.append(f"production.yaml: targets name env vars {sorted(want_env)} but envFromSecrets is empty")
    mounts = [m["mountPath"].rstrip("/") + "/" for m in
              prod["targets"].get("secretFiles", []) + prod["targets"].get("extraVolumeMounts", [])]
    for f in sorted(want_files):
        if not any(f.startswith(m) for m in mounts):
            errs.append(f"production.yaml: targets name file {f}, which no secretFiles or extraVolumeMounts mount provides")
    return errs


def check_compose(compose_path: Path = COMPOSE) -> list[str]:
    errs = []
    compose = load_compose(compose_path)
    services = compose.get("services") or {}
    for need in ("rabbitmq", "jaeger", "sim", "status", "ingest", *CONNECTORS.values(), "demo-sender"):
        if need not in services:
            errs.append(f"compose: service {need} missing")
    if "management" not in str(services.get("rabbitmq", {}).get("image", "")):
        errs.append("compose: RabbitMQ image without the management plugin")
    jaeger = services.get("jaeger", {})
    if "jaeger" not in str(jaeger.get("image", "")) or str((jaeger.get("environment") or {}).get(
            "COLLECTOR_OTLP_ENABLED", "")).lower() != "true":
        errs.append("compose: Jaeger all-in-one without COLLECTOR_OTLP_ENABLED=true")
    for name, svc in services.items():
        if "image" not in svc and "build" not in svc:
            errs.append(f"compose: {name} has neither image nor build")
        for dep in (svc.get("depends_on") or {}):
            if dep not in services:
                errs.append(f"compose: {name} depends on unknown service {dep}")
        for vol in svc.get("volumes") or []:
            src = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if src.startswith("."):
                if not (compose_path.parent / src).exists():
                    errs.append(f"compose: {name} mounts {src}, which does not exist")
            elif src and src not in (compose.get("volumes") or {}):
                errs.append(f"compose: {name} uses undeclared volume {src}")
    for name, binary in compose_commands(compose).items():
        env = services[name].get("environment") or {}
        for var, val in env.items():
            if var.endswith("_ADDR") or var == "SCIMRELAY_SIM_LISTEN":
                if not str(val).startswith("0.0.0.0:"):
                    errs.append(f"compose: {name} {var}={val} does not bind 0.0.0.0")
        for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "SCIMRELAY_AMQP_URL", "SCIMRELAY_STATUS_URL", "SCIMRELAY_INGEST_URL"):
            if var in env:
                host = re.sub(r"^\w+://(?:[^@/]*@)?", "", str(env[var])).split(":")[0].split("/")[0]
                if host not in services:
                    errs.append(f"compose: {name} {var} points at {host}, not a compose service")
    targets = compose_path.parent / "compose" / "targets.yaml"
    if targets.exists():
        for url in re.findall(r'"(https?://[^"]+)"', targets.read_text()):
            host = url.split("://")[1].split(":")[0].split("/")[0]
            if host not in services:
                errs.append(f"compose/targets.yaml: {url} points at {host}, not a compose service")
    for name, svc in services.items():
        if name not in NO_HEALTHCHECK and not (svc.get("healthcheck") or {}).get("test"):
            errs.append(f"compose: {name} has no health check")
        for port in svc.get("ports") or []:
            if not str(port).startswith("127.0.0.1:"):
                errs.append(f"compose: {name} publishes {port} on every interface (publish on 127.0.0.1)")
    local = compose_path.parent / "docker-compose.local.yml"
    if local.exists():
        for name, svc in (load_compose(local).get("services") or {}).items():
            if name not in services and name not in LOCAL_ONLY_SERVICES:
                errs.append(f"docker-compose.local.yml: {name} is not a service of docker-compose.yml")
            if name in services and set(svc) - {"image", "profiles"}:
                errs.append(f"docker-compose.local.yml: {name} changes {sorted(set(svc) - {'image', 'profiles'})}; "
                            "the local path only swaps images")
    errs += check_prometheus_targets(compose, compose_path.parent / "prometheus" / "prometheus.yml")
    return errs


def check_prometheus_targets(compose: dict, prometheus_yml: Path) -> list[str]:
    """Prometheus scrapes each compose service that serves /metrics, on the port it binds, and no other."""
    if not prometheus_yml.exists():
        return [f"{prometheus_yml.name} missing"]
    want = {}
    for name, binary in compose_commands(compose).items():
        var = METRICS_ADDR_ENV.get(binary)
        if var:
            addr = str((compose["services"][name].get("environment") or {}).get(var, ""))
            want[f"{name}:{addr.rsplit(':', 1)[-1]}"] = binary
    config = yaml.safe_load(prometheus_yml.read_text())
    got = {t for job in config.get("scrape_configs", []) for sc in job.get("static_configs", [])
           for t in sc.get("targets", [])}
    errs = [f"prometheus.yml does not scrape {t} ({want[t]})" for t in sorted(set(want) - got)]
    errs += [f"prometheus.yml scrapes {t}, which serves no scimrelay /metrics in compose" for t in sorted(got - set(want))]
    return errs


MAP_VALUES = ("resources", "annotations", "labels", "podAnnotations", "podLabels", "nodeSelector", "affinity")


def value_keys(node: Any, path: str = "") -> set[str]:
    """Leaf keys of values.yaml; connectors.<name>.x is documented once as connectors.<kind>.x."""
    if isinstance(node, dict) and node and path.split(".")[-1] not in MAP_VALUES:
        out: set[str] = set()
        for k, v in node.items():
            key = "<kind>" if path == "connectors" else k
            out |= value_keys(v, f"{path}.{key}" if path else key)
        return out
    return {path}


def check_docs() -> list[str]:
    errs = []
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, re.M))
    keys = value_keys(default_values())
    errs += [f"README values table lacks `{k}`" for k in sorted(keys - documented)]
    errs += [f"README values table documents `{k}`, which values.yaml lacks" for k in sorted(documented - keys)]
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    if not notes.strip():
        errs.append("NOTES.txt is empty")
    return errs


CHECKS: dict[str, Callable[[], list[str]]] = {
    "lint": check_lint,
    "render": check_render,
    "schema": check_schema,
    "security": check_security,
    "secrets": check_secrets,
    "auth": check_auth,
    "networkpolicy": check_networkpolicy,
    "replicas": check_replicas,
    "image": check_image,
    "env": check_env,
    "compose": check_compose,
    "docs": check_docs,
}


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(__doc__)
        return 0
    selected = [a for a in argv if not a.startswith("-")] or list(CHECKS)
    passed = failed = 0
    for name in selected:
        try:
            errors = CHECKS[name]()
        except Exception:
            errors = ["crashed:\n" + traceback.format_exc()]
        if errors:
            failed += 1
            print(f"FAIL {name}")
            for e in errors:
                print(f"     {e}")
        else:
            passed += 1
            print(f"PASS {name}")
    print(f"helm-lint: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
