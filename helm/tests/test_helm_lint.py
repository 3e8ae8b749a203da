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
        "scimrelay-ingest", "scimrelay-status", "github-connector", "aws-connector", "salesforce-connector"}
    for _, pod in deployments:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
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
    edit(chart / "values.yaml", '  url: ""\n\n# -- The targets file',
         '  url: "amqp://admin:hunter2@rabbitmq:5672/%2f"\n\n# -- The targets file')
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


def test_docs_check_catches_an_undocumented_value(chart):
    edit(chart / "values.yaml", "  pullPolicy: IfNotPresent\n", "  pullPolicy: IfNotPresent\n  digest: \"\"\n")
    assert any("image.digest" in e for e in hl.check_docs())
