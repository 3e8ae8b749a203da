"""Tests of scripts/helm-lint.py: the checks pass on the repository, and each one catches the fault it
exists for (a broken copy of the chart, Dockerfile or compose file must fail it).

Run: target/helm-venv/bin/python -m pytest helm/tests -q
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("helm_lint", ROOT / "scripts" / "helm-lint.py")
hl = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(hl)


@pytest.fixture
def chart(tmp_path, monkeypatch):
    """A private copy of the chart that the checks use instead of the real one."""
    dst = tmp_path / "scimrelay"
    shutil.copytree(hl.CHART, dst)
    monkeypatch.setattr(hl, "CHART", dst)
    return dst


@pytest.fixture
def deploy(tmp_path):
    """A private copy of deploy/ (Dockerfile, compose file and its config files)."""
    dst = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy", dst, ignore=shutil.ignore_patterns("grafana"))
    return dst


def edit(path: Path, old: str, new: str, count: int = 0) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new) if not count else text.replace(old, new, count))


# --- the repository as it is --------------------------------------------------------------------


def test_every_check_passes(capsys):
    assert hl.main([]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^helm-lint: {len(hl.CHECKS)} passed, 0 failed$", out, re.M), out


def test_exit_status_is_non_zero_on_failure(chart, capsys):
    edit(chart / "templates" / "_helpers.tpl", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false")
    assert hl.main(["security"]) == 1
    assert "helm-lint: 0 passed, 1 failed" in capsys.readouterr().out


@pytest.mark.parametrize("why", sorted(hl.BAD_VALUES))
def test_schema_rejects_bad_values(why):
    with pytest.raises(Exception) as err:
        hl.render(hl.BAD_VALUES[why])
    assert type(err.value).__name__ == "HelmValuesError", err.value


@pytest.mark.parametrize("why", sorted(hl.BAD_COMBINATIONS))
def test_templates_refuse_bad_combinations(why):
    with pytest.raises(Exception):
        hl.render(hl.BAD_COMBINATIONS[why])


def test_rendered_deployments_are_hardened_and_probed():
    docs = hl.render(hl.production_values())
    deployments = list(hl.deployments_of(docs))
    assert {hl.binary_of(p["containers"][0]) for _, p in deployments} == {
        "scimrelay-ingest", "scimrelay-status", "scim-connector", "github-connector", "aws-connector",
        "salesforce-connector"}
    for _, pod in deployments:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            if hl.binary_of(c) == "scimrelay-ingest":  # production runs mutual TLS: TCP checks
                assert c["livenessProbe"]["tcpSocket"] == {"port": "http"}
                assert c["readinessProbe"]["tcpSocket"] == {"port": "http"}
                continue
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_otlp_endpoint_value_reaches_every_service():
    docs = hl.render({"otel": {"endpoint": "http://jaeger-collector.obs:4317"},
                      "connectors": {k: {"enabled": True} for k in hl.CONNECTORS}})
    for _, pod in hl.deployments_of(docs):
        env = hl.container_env(pod["containers"][0])
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://jaeger-collector.obs:4317"
    for _, pod in hl.deployments_of(hl.render({})):
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in hl.container_env(pod["containers"][0])


def test_connector_replicas_split_the_budget():
    docs = hl.render({"connectors": {
        "github": {"enabled": True, "replicaCount": 3},
        "aws": {"enabled": True, "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6}}}})
    got = {hl.binary_of(p["containers"][0]): hl.container_env(p["containers"][0]).get(
        "SCIMRELAY_CONNECTOR_REPLICAS", {}).get("value") for _, p in hl.deployments_of(docs)}
    assert got["github-connector"] == "3"
    assert got["aws-connector"] == "6"


def test_sqlite_status_gets_a_writable_volume():
    docs = hl.render({})
    (_, pod), = [(d, p) for d, p in hl.deployments_of(docs) if d["metadata"]["name"].endswith("-status")]
    c = pod["containers"][0]
    db = hl.container_env(c)["SCIMRELAY_STATUS_DB"]["value"]
    assert db.startswith("/var/lib/scimrelay/")
    assert "/var/lib/scimrelay" in {m["mountPath"] for m in c["volumeMounts"]}


# --- each check catches its fault ---------------------------------------------------------------


def test_kubernetes_validate_strict_rejects_unknown_fields(chart):
    edit(chart / "templates" / "ingest.yaml", "  type: {{ .Values.ingest.service.type }}",
         "  type: {{ .Values.ingest.service.type }}\n  sessionAffinityy: None")
    errs = hl.check_render()
    assert any("sessionAffinityy" in e for e in errs), errs


def test_lint_reports_template_errors(chart):
    (chart / "templates" / "broken.yaml").write_text("{{ .Values.nope.deeper }}\n")
    assert hl.check_lint()


def test_schema_check_catches_an_open_object(chart):
    edit(chart / "values.schema.json", '"additionalProperties": false', '"additionalProperties": true', 1)
    errs = hl.check_schema()
    assert any("allows unknown keys" in e or "accepted" in e for e in errs), errs


def test_security_check_catches_a_missing_probe(chart):
    edit(chart / "templates" / "_helpers.tpl", "path: /readyz", "path: /healthz")
    errs = hl.check_security()
    assert any("readinessProbe" in e for e in errs), errs


def test_security_check_catches_capabilities(chart):
    edit(chart / "templates" / "_helpers.tpl", 'drop: ["ALL"]', 'drop: ["NET_RAW"]')
    assert any("capabilities" in e for e in hl.check_security())


def test_security_check_catches_a_loopback_bind(chart):
    edit(chart / "templates" / "connectors.yaml", 'value: "0.0.0.0:8081"', 'value: "127.0.0.1:8081"')
    assert any("SCIMRELAY_CONNECTOR_HTTP_ADDR" in e for e in hl.check_security())


def test_networkpolicy_check_catches_an_open_connector(chart):
    edit(chart / "templates" / "networkpolicy.yaml", "    - from:\n        - podSelector:",
         "    - from:\n        - ipBlock: {cidr: 0.0.0.0/0}\n        - podSelector:")
    assert any("outside the release" in e for e in hl.check_networkpolicy())


def test_replicas_check_catches_an_unsplit_budget(chart):
    edit(chart / "templates" / "connectors.yaml", "value: {{ $replicas | quote }}", 'value: "1"')
    assert any("SCIMRELAY_CONNECTOR_REPLICAS" in e for e in hl.check_replicas())


def test_secrets_check_catches_a_password_in_values(chart):
    edit(chart / "values.yaml", '  url: ""\n  # -- PEM CA bundle',
         '  url: "amqp://admin:hunter2@rabbitmq:5672/%2f"\n  # -- PEM CA bundle')
    assert any("credentials" in e for e in hl.check_secrets())


def test_image_check_catches_a_binary_not_built(deploy):
    edit(deploy / "Dockerfile", "      --bin aws-connector \\\n", "")
    errs = hl.check_image(deploy / "Dockerfile", deploy / "docker-compose.yml")
    assert any("aws-connector" in e for e in errs), errs


def test_image_check_catches_a_misnamed_command(deploy):
    edit(deploy / "docker-compose.yml", 'command: ["github-connector"]', 'command: ["gh-connector"]')
    errs = hl.check_image(deploy / "Dockerfile", deploy / "docker-compose.yml")
    assert any("gh-connector" in e for e in errs), errs


def test_image_check_catches_a_root_user(deploy):
    edit(deploy / "Dockerfile", "USER 10001:10001", "USER root")
    assert any("non-root" in e for e in hl.check_image(deploy / "Dockerfile", deploy / "docker-compose.yml"))


def test_env_check_catches_a_typo_in_compose(deploy):
    edit(deploy / "docker-compose.yml", "SCIMRELAY_DRAIN_TIMEOUT_SECS:", "SCIMRELAY_DRAIN_TIMEOUT_SEC:")
    errs = hl.check_env(deploy / "docker-compose.yml")
    assert any("gets SCIMRELAY_DRAIN_TIMEOUT_SEC, which it never reads" in e for e in errs), errs


def test_env_check_catches_a_typo_in_the_chart(chart):
    edit(chart / "templates" / "ingest.yaml", "name: SCIMRELAY_INGEST_MAX_BATCH", "name: SCIMRELAY_INGEST_MAXBATCH")
    errs = hl.check_env()
    assert any("SCIMRELAY_INGEST_MAXBATCH" in e for e in errs), errs
    assert any("reads SCIMRELAY_INGEST_MAX_BATCH" in e for e in errs), errs


def test_env_check_catches_a_secret_the_connectors_lack(deploy):
    edit(deploy / "docker-compose.yml", "  DEMO_AWS_TOKEN: demo-aws-token\n", "")
    errs = hl.check_env(deploy / "docker-compose.yml")
    assert any("DEMO_AWS_TOKEN" in e for e in errs), errs


def test_env_scan_sees_what_the_services_read():
    reads = hl.rust_env_reads()
    assert "SCIMRELAY_CONNECTOR_REPLICAS" in hl.reads_of("github-connector", reads)
    assert "SCIMRELAY_INGEST_HTTP_ADDR" in hl.reads_of("scimrelay-ingest", reads)
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in hl.reads_of("scimrelay-status", reads)


def test_compose_check_catches_missing_jaeger_otlp(deploy):
    edit(deploy / "docker-compose.yml", 'COLLECTOR_OTLP_ENABLED: "true"', 'COLLECTOR_OTLP_ENABLED: "false"')
    assert any("Jaeger" in e for e in hl.check_compose(deploy / "docker-compose.yml"))


def test_compose_check_catches_a_wrong_host(deploy):
    edit(deploy / "docker-compose.yml", "http://status:50052", "http://stauts:50052")
    assert any("stauts" in e for e in hl.check_compose(deploy / "docker-compose.yml"))


def test_image_check_catches_a_local_runtime_stage_that_drifted(deploy):
    edit(deploy / "Dockerfile.local", "USER 10001:10001", "USER 10002:10002")
    errs = hl.check_image(deploy / "Dockerfile", deploy / "docker-compose.yml")
    assert any("Dockerfile.local: runtime stage differs" in e for e in errs), errs


def test_image_check_catches_a_local_dockerfile_that_needs_a_registry(deploy):
    edit(deploy / "Dockerfile.local", "FROM scratch AS builder", "FROM rust:1.95-bookworm AS builder")
    edit(deploy / "Dockerfile.local", "COPY bin/ /out/", "RUN --mount=type=cache,target=/x true")
    errs = hl.check_image(deploy / "Dockerfile", deploy / "docker-compose.yml")
    assert any("rust:1.95-bookworm" in e for e in errs), errs
    assert any("RUN --mount" in e for e in errs), errs


def test_compose_check_catches_a_missing_health_check(deploy):
    edit(deploy / "docker-compose.yml", "    healthcheck:\n      test: [\"CMD\", \"wget\"",
         "    x-healthcheck:\n      test: [\"CMD\", \"wget\"")
    assert any("prometheus has no health check" in e for e in hl.check_compose(deploy / "docker-compose.yml"))


def test_compose_check_catches_a_port_on_every_interface(deploy):
    edit(deploy / "docker-compose.yml", '"127.0.0.1:${SCIMRELAY_SIM_PORT:-9090}:9090"', '"9090:9090"')
    assert any("sim publishes 9090:9090" in e for e in hl.check_compose(deploy / "docker-compose.yml"))


def test_compose_check_catches_a_local_override_that_changes_more_than_images(deploy):
    edit(deploy / "docker-compose.local.yml", "    image: scimrelay-local/prometheus:2.42\n",
         "    image: scimrelay-local/prometheus:2.42\n    command: [--web.enable-admin-api]\n")
    assert any("prometheus changes ['command']" in e for e in hl.check_compose(deploy / "docker-compose.yml"))


def test_compose_check_catches_a_service_prometheus_does_not_scrape(deploy):
    edit(deploy / "prometheus" / "prometheus.yml", '      - targets: ["aws-connector:8081"]\n        labels: {service: aws-connector}\n', "")
    edit(deploy / "prometheus" / "prometheus.yml", '["status:8082"]', '["status:50052"]')
    errs = hl.check_compose(deploy / "docker-compose.yml")
    assert any("does not scrape aws-connector:8081" in e for e in errs), errs
    assert any("scrapes status:50052" in e for e in errs), errs


def test_docs_check_catches_an_undocumented_value(chart):
    edit(chart / "values.yaml", "  pullPolicy: IfNotPresent\n", "  pullPolicy: IfNotPresent\n  digest: \"\"\n")
    assert any("image.digest" in e for e in hl.check_docs())


# --- authentication and TLS ---------------------------------------------------------------------

SERVERS = ("scimrelay-ingest", "scimrelay-status")
ALL_CONNECTORS = {"connectors": {k: {"enabled": True} for k in hl.CONNECTORS}}
TLS = {"tls": {"existingSecret": "scimrelay-tls"}}
MUTUAL = {"tls": {"existingSecret": "scimrelay-tls", "mutual": True,
                  "connectorCert": {"existingSecret": "scimrelay-connector-tls"}}}


def containers(values) -> dict[str, tuple[dict, dict]]:
    """binary -> (pod spec, its container), for the Deployments rendered with values."""
    return {hl.binary_of(c): (pod, c) for _, pod in hl.deployments_of(hl.render(values)) for c in pod["containers"]}


def value(c: dict, var: str):
    return hl.container_env(c).get(var, {}).get("value")


def mount(c: dict, path: str) -> dict:
    m = hl.mount_of(c, path)
    assert m is not None, f"{path} lies in no mount of {c['name']}"
    return m


def volume(pod: dict, name: str) -> dict:
    return {v["name"]: v for v in pod["volumes"]}[name]


def notes(values) -> str:
    with hl.helm().Chart.load(str(hl.CHART)) as ch:
        out = ch.render(values, name=hl.RELEASE, namespace=hl.NAMESPACE)
    return next(text for path, text in out.items() if path.endswith("NOTES.txt"))


def test_keys_file_mounted_and_env_set_on_ingest_and_status():
    got = containers({"auth": {"keys": {"existingSecret": "my-keys", "existingSecretKey": "api-keys.yaml"}}})
    for binary in SERVERS:
        pod, c = got[binary]
        path = value(c, "SCIMRELAY_API_KEYS_FILE")
        assert path == "/run/scimrelay/keys/api-keys.yaml"
        m = mount(c, path)
        assert m["mountPath"] == "/run/scimrelay/keys" and m["readOnly"] is True
        assert "subPath" not in m  # kubelet updates of the Secret reach the file: rotation without restart
        assert volume(pod, m["name"])["secret"] == {
            "secretName": "my-keys", "items": [{"key": "api-keys.yaml", "path": "api-keys.yaml"}],
            "defaultMode": 0o440}
        assert "SCIMRELAY_ALLOW_UNAUTHENTICATED" not in hl.container_env(c)


def test_default_values_authenticate():
    got = containers({})
    for binary in SERVERS:
        _, c = got[binary]
        assert value(c, "SCIMRELAY_API_KEYS_FILE") == "/run/scimrelay/keys/keys.yaml"
        assert "SCIMRELAY_ALLOW_UNAUTHENTICATED" not in hl.container_env(c)
        assert "SCIMRELAY_TLS_CERT_FILE" not in hl.container_env(c)  # TLS needs your certificate: off
    pod, c = got["scim-connector"]
    assert volume(pod, "status-key")["secret"]["secretName"] == "scimrelay-connector-key"


def test_connectors_get_the_status_key_file_and_never_the_keys_file():
    got = containers(hl.deep_merge(ALL_CONNECTORS, {
        "auth": {"connectorKey": {"existingSecret": "conn-key", "existingSecretKey": "key"}}}))
    for binary in hl.CONNECTORS.values():
        pod, c = got[binary]
        env = hl.container_env(c)
        path = value(c, "SCIMRELAY_STATUS_API_KEY_FILE")
        assert path == "/run/scimrelay/status-key/key"
        assert "SCIMRELAY_STATUS_API_KEY" not in env  # never a plain value
        assert volume(pod, mount(c, path)["name"])["secret"] == {
            "secretName": "conn-key", "items": [{"key": "key", "path": "key"}], "defaultMode": 0o440}
        assert value(c, "SCIMRELAY_STATUS_URL") == "http://scimrelay-status:50052"
        assert "SCIMRELAY_API_KEYS_FILE" not in env
        assert "api-keys" not in {v["name"] for v in pod["volumes"]}


def test_allow_unauthenticated_turns_authentication_off_explicitly():
    got = containers({"auth": {"allowUnauthenticated": True, "keys": {"existingSecret": ""},
                               "connectorKey": {"existingSecret": ""}}})
    for binary in SERVERS:
        pod, c = got[binary]
        assert value(c, "SCIMRELAY_ALLOW_UNAUTHENTICATED") == "true"
        assert "SCIMRELAY_API_KEYS_FILE" not in hl.container_env(c)
        assert "api-keys" not in {v["name"] for v in pod["volumes"]}
    _, c = got["scim-connector"]
    assert not {"SCIMRELAY_STATUS_API_KEY", "SCIMRELAY_STATUS_API_KEY_FILE"} & set(hl.container_env(c))
    text = notes({"auth": {"allowUnauthenticated": True}})
    assert "WARNING: auth.allowUnauthenticated=true" in text


def test_notes_tell_how_to_make_a_key():
    text = notes({})
    assert "scimrelayctl keys new --id" in text and "--scope send" in text
    assert "--tenant '*' --scope connector" in text  # the connectors' key
    assert "create secret generic scimrelay-api-keys --from-file=keys.yaml=" in text
    assert "create secret generic scimrelay-connector-key" in text


FAILS = {
    "no keys file, authentication not turned off": (
        {"auth": {"keys": {"existingSecret": ""}}},
        ["auth.keys.existingSecret is empty", "auth.allowUnauthenticated=true", "scimrelayctl keys new"]),
    "keys file but no key for the connectors": (
        {"auth": {"connectorKey": {"existingSecret": ""}}},
        ["auth.connectorKey.existingSecret is empty", "connectors could not call status",
         "--tenant '*' --scope connector"]),
    "mutual TLS without TLS": (
        {"tls": {"mutual": True}}, ["tls.mutual needs tls.existingSecret"]),
    "mutual TLS without the connectors' certificate": (
        {"tls": {"existingSecret": "scimrelay-tls", "mutual": True}},
        ["tls.mutual needs tls.connectorCert.existingSecret"]),
}


@pytest.mark.parametrize("why", sorted(FAILS))
def test_rendering_fails_with_a_clear_message(why):
    values, phrases = FAILS[why]
    with pytest.raises(Exception) as err:
        hl.render(values)
    assert type(err.value).__name__ == "HelmRenderError", err.value
    for phrase in phrases:
        assert phrase in str(err.value), (phrase, str(err.value))


def test_no_connector_needs_no_connector_key():
    docs = hl.render({"auth": {"connectorKey": {"existingSecret": ""}},
                      "connectors": {"scim": {"enabled": False}}})
    assert {hl.binary_of(p["containers"][0]) for _, p in hl.deployments_of(docs)} == set(SERVERS)


@pytest.mark.parametrize("values, where", [
    ({"auth": {"keysSecret": "api-keys"}}, "/auth"),
    ({"auth": {"keys": {"existingSecrt": "api-keys"}}}, "/auth/keys"),
    ({"auth": {"connectorKey": {"existingSecretKy": "api-key"}}}, "/auth/connectorKey"),
    ({"tls": {"mutal": True}}, "/tls"),
    ({"tls": {"connectorCert": {"existingSecretKey": "tls.crt"}}}, "/tls/connectorCert"),
    ({"tls": {"serverCA": {"secret": "ca"}}}, "/tls/serverCA"),
    ({"amqp": {"ca": {"existingsecret": "ca"}}}, "/amqp/ca"),
])
def test_schema_rejects_a_typo_under_auth_and_tls(values, where):
    with pytest.raises(Exception) as err:
        hl.render(values)
    assert type(err.value).__name__ == "HelmValuesError", err.value
    assert f"at '{where}'" in str(err.value), err.value


def test_tls_env_https_probes_and_connectors_over_https():
    got = containers(hl.deep_merge(TLS, ALL_CONNECTORS))
    for binary in SERVERS:
        pod, c = got[binary]
        assert value(c, "SCIMRELAY_TLS_CERT_FILE") == "/run/scimrelay/tls/tls.crt"
        assert value(c, "SCIMRELAY_TLS_KEY_FILE") == "/run/scimrelay/tls/tls.key"
        assert "SCIMRELAY_TLS_CLIENT_CA_FILE" not in hl.container_env(c)
        tls = volume(pod, mount(c, "/run/scimrelay/tls/tls.crt")["name"])["secret"]
        assert tls["secretName"] == "scimrelay-tls"
        assert [i["key"] for i in tls["items"]] == ["tls.crt", "tls.key"]
    _, ingest = got["scimrelay-ingest"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert ingest[probe]["httpGet"]["scheme"] == "HTTPS"
    _, status = got["scimrelay-status"]  # its health port stays plain
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert status[probe]["httpGet"]["scheme"] == "HTTP"
    for binary in hl.CONNECTORS.values():
        pod, c = got[binary]
        assert value(c, "SCIMRELAY_STATUS_URL") == "https://scimrelay-status:50052"
        ca = value(c, "SCIMRELAY_STATUS_CA_FILE")
        assert ca == "/run/scimrelay/status-ca/ca.crt"
        # only ca.crt of the servers' Secret reaches a connector, never its private key
        assert volume(pod, mount(c, ca)["name"])["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
        assert "SCIMRELAY_STATUS_CLIENT_CERT_FILE" not in hl.container_env(c)
        assert c["livenessProbe"]["httpGet"]["scheme"] == "HTTP"


def test_tls_with_a_public_certificate_trusts_the_system_roots():
    got = containers(hl.deep_merge(TLS, {"tls": {"serverCA": {"existingSecretKey": ""}}}))
    _, c = got["scim-connector"]
    assert value(c, "SCIMRELAY_STATUS_URL").startswith("https://")
    assert "SCIMRELAY_STATUS_CA_FILE" not in hl.container_env(c)


def test_mutual_tls_client_ca_tcp_probes_and_connector_certificates():
    got = containers(hl.deep_merge(MUTUAL, ALL_CONNECTORS))
    for binary in SERVERS:
        pod, c = got[binary]
        ca = value(c, "SCIMRELAY_TLS_CLIENT_CA_FILE")
        assert ca == "/run/scimrelay/tls/ca.crt"
        assert "ca.crt" in [i["key"] for i in volume(pod, mount(c, ca)["name"])["secret"]["items"]]
    _, ingest = got["scimrelay-ingest"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert ingest[probe]["tcpSocket"] == {"port": "http"}, probe
        assert "httpGet" not in ingest[probe]
    _, status = got["scimrelay-status"]
    assert status["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http", "scheme": "HTTP"}
    for binary in hl.CONNECTORS.values():
        pod, c = got[binary]
        cert, key = value(c, "SCIMRELAY_STATUS_CLIENT_CERT_FILE"), value(c, "SCIMRELAY_STATUS_CLIENT_KEY_FILE")
        assert (cert, key) == ("/run/scimrelay/status-client/tls.crt", "/run/scimrelay/status-client/tls.key")
        assert volume(pod, mount(c, cert)["name"])["secret"]["secretName"] == "scimrelay-connector-tls"


def test_mutual_tls_with_separate_cas():
    got = containers(hl.deep_merge(MUTUAL, {"tls": {
        "clientCA": {"existingSecret": "clients-ca", "existingSecretKey": "bundle.pem"},
        "serverCA": {"existingSecret": "servers-ca"}}}))
    pod, c = got["scimrelay-status"]
    ca = value(c, "SCIMRELAY_TLS_CLIENT_CA_FILE")
    assert ca == "/run/scimrelay/client-ca/bundle.pem"
    assert volume(pod, mount(c, ca)["name"])["secret"]["secretName"] == "clients-ca"
    assert [i["key"] for i in volume(pod, "tls")["secret"]["items"]] == ["tls.crt", "tls.key"]
    pod, c = got["scim-connector"]
    assert volume(pod, mount(c, value(c, "SCIMRELAY_STATUS_CA_FILE"))["name"])["secret"]["secretName"] == "servers-ca"


def test_amqp_ca_reaches_every_service():
    got = containers(hl.deep_merge(ALL_CONNECTORS, {"amqp": {"ca": {"existingSecret": "rabbitmq-ca"}}}))
    assert len(got) == 2 + len(hl.CONNECTORS)
    for binary, (pod, c) in got.items():
        path = value(c, "SCIMRELAY_AMQP_CA_FILE")
        assert path == "/run/scimrelay/amqp-ca/ca.crt", binary
        assert volume(pod, mount(c, path)["name"])["secret"]["secretName"] == "rabbitmq-ca"
    for binary, (_, c) in containers({}).items():
        assert "SCIMRELAY_AMQP_CA_FILE" not in hl.container_env(c), binary


def test_extra_volumes_reach_the_connectors_only():
    extra = {"targets": {"extraVolumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca"}}],
                         "extraVolumeMounts": [{"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True}]}}
    got = containers(hl.deep_merge(ALL_CONNECTORS, extra))
    for binary, (pod, c) in got.items():
        names = {v["name"] for v in pod["volumes"]}
        if binary in SERVERS:
            assert "corp-ca" not in names
            continue
        assert volume(pod, "corp-ca") == {"name": "corp-ca", "configMap": {"name": "corp-ca"}}
        assert mount(c, "/etc/corp-ca/ca.pem")["name"] == "corp-ca"


def test_servicemonitor_scrapes_ingest_over_https_with_tls():
    tls_config = {"ca": {"secret": {"name": "scimrelay-tls", "key": "ca.crt"}}, "serverName": "scimrelay-ingest"}
    docs = hl.render(hl.deep_merge(TLS, {"serviceMonitor": {"enabled": True, "tlsConfig": tls_config}}))
    monitors = {d["metadata"]["name"]: d["spec"] for d in hl.of_kind(docs, "ServiceMonitor")}
    assert set(monitors) == {"scimrelay", "scimrelay-ingest"}
    assert monitors["scimrelay"]["selector"]["matchExpressions"] == [
        {"key": "app.kubernetes.io/component", "operator": "NotIn", "values": ["ingest"]}]
    (ep,) = monitors["scimrelay-ingest"]["endpoints"]
    assert ep["scheme"] == "https" and ep["tlsConfig"] == tls_config
    assert monitors["scimrelay-ingest"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "ingest"
    plain = hl.render({"serviceMonitor": {"enabled": True}})
    assert [d["metadata"]["name"] for d in hl.of_kind(plain, "ServiceMonitor")] == ["scimrelay"]


def test_production_example_enables_keys_and_mutual_tls():
    got = containers(hl.production_values())
    for binary in SERVERS:
        _, c = got[binary]
        for var in ("SCIMRELAY_API_KEYS_FILE", "SCIMRELAY_TLS_CERT_FILE", "SCIMRELAY_TLS_CLIENT_CA_FILE",
                    "SCIMRELAY_AMQP_CA_FILE"):
            assert var in hl.container_env(c), (binary, var)
    _, c = got["scim-connector"]
    assert value(c, "SCIMRELAY_STATUS_URL").startswith("https://")
    assert "SCIMRELAY_STATUS_CLIENT_CERT_FILE" in hl.container_env(c)
    assert mount(c, "/etc/scimrelay-ca/corp-ca.pem")["name"] == "corp-ca"  # the wiki target's tls.ca_file


def test_numbers_render_as_integers():
    _, c = containers({})["scimrelay-ingest"]
    assert value(c, "SCIMRELAY_INGEST_MAX_BODY_BYTES") == "4194304"  # not "4.194304e+06"


# --- the auth and TLS checks catch their faults --------------------------------------------------


def test_auth_check_catches_a_keys_file_mounted_with_subpath(chart):
    edit(chart / "templates" / "_helpers.tpl", "- name: api-keys\n  mountPath: /run/scimrelay/keys\n",
         "- name: api-keys\n  mountPath: /run/scimrelay/keys/keys.yaml\n  subPath: keys.yaml\n")
    assert any("subPath" in e for e in hl.check_auth())


def test_auth_check_catches_a_connector_without_a_key(chart):
    edit(chart / "templates" / "_helpers.tpl", "- name: SCIMRELAY_STATUS_API_KEY_FILE",
         "- name: SCIMRELAY_STATUS_API_KEY_PATH")
    errs = hl.check_auth()
    assert any("status demands an API key and the connector has none" in e for e in errs), errs


def test_auth_check_catches_plain_http_to_a_tls_status(chart):
    edit(chart / "templates" / "_helpers.tpl", '{{ ternary "https" "http" (not (empty .Values.tls.existingSecret)) }}', "http")
    assert any("SCIMRELAY_STATUS_URL" in e and "TLS" in e for e in hl.check_auth())


def test_auth_check_catches_unauthenticated_defaults(chart):
    edit(chart / "values.yaml", "  allowUnauthenticated: false", "  allowUnauthenticated: true")
    assert any("default values" in e and "without authentication" in e for e in hl.check_auth())


def test_auth_check_catches_a_file_outside_every_mount(chart):
    edit(chart / "templates" / "_helpers.tpl", "  value: /run/scimrelay/amqp-ca/", "  value: /run/elsewhere/")
    assert any("SCIMRELAY_AMQP_CA_FILE" in e and "no mounted volume" in e for e in hl.check_auth())


def test_security_check_catches_an_http_probe_on_tls_ingest(chart):
    edit(chart / "templates" / "ingest.yaml", '(ternary "tcp" "https" .Values.tls.mutual)',
         '(ternary "tcp" "http" .Values.tls.mutual)')
    edit(chart / "examples" / "production.yaml", "  mutual: true", "  mutual: false")
    edit(chart / "examples" / "production.yaml", "  connectorCert:\n    existingSecret: scimrelay-connector-tls\n", "")
    errs = hl.check_security()
    assert any("uses HTTP on a listener that speaks TLS" in e for e in errs), errs


def test_security_check_catches_an_http_probe_under_mutual_tls(chart):
    edit(chart / "templates" / "ingest.yaml", '(ternary "tcp" "https" .Values.tls.mutual)', '"https"')
    errs = hl.check_security()
    assert any("not a tcpSocket check" in e for e in errs), errs


def test_secrets_check_catches_a_plain_connector_key(chart):
    edit(chart / "templates" / "_helpers.tpl", "- name: SCIMRELAY_STATUS_API_KEY_FILE\n  value:",
         "- name: SCIMRELAY_STATUS_API_KEY\n  value: srk_leaked #")
    assert any("SCIMRELAY_STATUS_API_KEY is a plain value" in e for e in hl.check_secrets())


def test_env_scan_keeps_server_variables_to_the_servers():
    reads = hl.rust_env_reads()
    for var in ("SCIMRELAY_API_KEYS_FILE", "SCIMRELAY_TLS_CERT_FILE", "SCIMRELAY_ALLOW_UNAUTHENTICATED"):
        assert var in hl.reads_of("scimrelay-ingest", reads)
        assert var in hl.reads_of("scimrelay-status", reads)
        assert var not in hl.reads_of("github-connector", reads)
    assert "SCIMRELAY_STATUS_API_KEY_FILE" in hl.reads_of("github-connector", reads)
    assert "SCIMRELAY_AMQP_CA_FILE" in hl.reads_of("aws-connector", reads)


def test_env_check_catches_a_target_ca_file_nobody_mounts(chart):
    edit(chart / "examples" / "production.yaml", "      mountPath: /etc/scimrelay-ca\n", "      mountPath: /etc/other-ca\n")
    errs = hl.check_env()
    assert any("/etc/scimrelay-ca/corp-ca.pem" in e for e in errs), errs
