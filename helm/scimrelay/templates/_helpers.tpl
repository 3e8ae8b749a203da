{{/* Chart name, truncated to the 63 characters Kubernetes allows. */}}
{{- define "scimrelay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; components append "-ingest", "-github-connector", ... */}}
{{- define "scimrelay.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "scimrelay.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "scimrelay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: scimrelay
{{- end }}

{{/* Selector labels of one component: pass (dict "root" $ "component" "ingest"). */}}
{{- define "scimrelay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "scimrelay.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "scimrelay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "scimrelay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "scimrelay.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "scimrelay.configMapName" -}}
{{- default (printf "%s-targets" (include "scimrelay.fullname" .)) .Values.targets.existingConfigMap }}
{{- end }}

{{/* Pod-level securityContext: non-root, RuntimeDefault seccomp. UID 10001 is the image's user. */}}
{{- define "scimrelay.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container securityContext: read-only root, no privilege escalation, every capability dropped. */}}
{{- define "scimrelay.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Environment every service shares: broker, logging, OTLP export. */}}
{{- define "scimrelay.commonEnv" -}}
- name: SCIMRELAY_AMQP_URL
{{- if .Values.amqp.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ .Values.amqp.existingSecret }}
      key: {{ .Values.amqp.existingSecretKey }}
{{- else }}
  value: {{ required "amqp.existingSecret or amqp.url is required" .Values.amqp.url | quote }}
{{- end }}
- name: RUST_LOG
  value: {{ .Values.logging.level | quote }}
{{- /* The providers this chart can run: a targets file naming another stops every service at start. */}}
- name: SCIMRELAY_PROVIDERS
  value: {{ keys .Values.connectors | sortAlpha | join "," | quote }}
- name: SCIMRELAY_LOG_FORMAT
  value: {{ .Values.logging.format | quote }}
{{- if .Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otel.endpoint | quote }}
{{- end }}
{{- with .Values.amqp.ca.existingSecret }}
- name: SCIMRELAY_AMQP_CA_FILE
  value: /run/scimrelay/amqp-ca/{{ $.Values.amqp.ca.existingSecretKey }}
{{- end }}
{{- end }}

{{/* Mounts and volumes every service shares: the broker's CA bundle. */}}
{{- define "scimrelay.commonMounts" -}}
{{- if .Values.amqp.ca.existingSecret }}
- name: amqp-ca
  mountPath: /run/scimrelay/amqp-ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "scimrelay.commonVolumes" -}}
{{- with .Values.amqp.ca.existingSecret }}
- name: amqp-ca
  secret:
    secretName: {{ . }}
    items: [{key: {{ $.Values.amqp.ca.existingSecretKey | quote }}, path: {{ $.Values.amqp.ca.existingSecretKey | quote }}}]
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* Refuses values that would deploy services unable to start or to reach each other. Included
     once, by ingest.yaml (always rendered). */}}
{{- define "scimrelay.validate" -}}
{{- $anyConnector := false }}
{{- range $kind, $c := .Values.connectors }}{{ if $c.enabled }}{{ $anyConnector = true }}{{ end }}{{ end }}
{{- if and (not .Values.auth.allowUnauthenticated) (not .Values.auth.keys.existingSecret) }}
{{- fail "auth.keys.existingSecret is empty: ingest and status listen on 0.0.0.0 and refuse to start without an API keys file. Make keys with `scimrelayctl keys new --id ID --tenant T --scope send`, store the keys file in a Secret (key auth.keys.existingSecretKey, default keys.yaml) and set auth.keys.existingSecret; or set auth.allowUnauthenticated=true to run WITHOUT authentication (never in production)" }}
{{- end }}
{{- if and (not .Values.auth.allowUnauthenticated) $anyConnector (not .Values.auth.connectorKey.existingSecret) }}
{{- fail "auth.connectorKey.existingSecret is empty but auth.keys.existingSecret is set: the connectors could not call status (the state of record, AdmitDeprovision). Make a key with `scimrelayctl keys new --id connectors --tenant '*' --scope connector`, add its entry to the keys file, store the key in a Secret (key auth.connectorKey.existingSecretKey, default api-key) and set auth.connectorKey.existingSecret" }}
{{- end }}
{{- if and .Values.tls.mutual (not .Values.tls.existingSecret) }}
{{- fail "tls.mutual needs tls.existingSecret: mutual TLS is TLS with client certificates; set tls.existingSecret to the kubernetes.io/tls Secret of ingest and status" }}
{{- end }}
{{- if and .Values.tls.mutual $anyConnector (not .Values.tls.connectorCert.existingSecret) }}
{{- fail "tls.mutual needs tls.connectorCert.existingSecret: status then requires a client certificate, and the connectors have none. Set it to a kubernetes.io/tls Secret (tls.crt, tls.key) signed by the client CA" }}
{{- end }}
{{- end }}

{{/* Authentication and TLS of a server (ingest, status): environment. */}}
{{- define "scimrelay.serverSecurityEnv" -}}
{{- if .Values.auth.allowUnauthenticated }}
- name: SCIMRELAY_ALLOW_UNAUTHENTICATED
  value: "true"
{{- else }}
- name: SCIMRELAY_API_KEYS_FILE
  value: /run/scimrelay/keys/{{ .Values.auth.keys.existingSecretKey }}
{{- end }}
{{- if .Values.tls.existingSecret }}
- name: SCIMRELAY_TLS_CERT_FILE
  value: /run/scimrelay/tls/tls.crt
- name: SCIMRELAY_TLS_KEY_FILE
  value: /run/scimrelay/tls/tls.key
{{- if .Values.tls.mutual }}
- name: SCIMRELAY_TLS_CLIENT_CA_FILE
{{- if .Values.tls.clientCA.existingSecret }}
  value: /run/scimrelay/client-ca/{{ .Values.tls.clientCA.existingSecretKey }}
{{- else }}
  value: /run/scimrelay/tls/{{ .Values.tls.clientCA.existingSecretKey }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Authentication and TLS of a server: mounts. Whole directories, never subPath: the kubelet
     updates a Secret's files in place only without it, and the services re-read the keys file. */}}
{{- define "scimrelay.serverSecurityMounts" -}}
{{- if not .Values.auth.allowUnauthenticated }}
- name: api-keys
  mountPath: /run/scimrelay/keys
  readOnly: true
{{- end }}
{{- if .Values.tls.existingSecret }}
- name: tls
  mountPath: /run/scimrelay/tls
  readOnly: true
{{- if and .Values.tls.mutual .Values.tls.clientCA.existingSecret }}
- name: client-ca
  mountPath: /run/scimrelay/client-ca
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{- define "scimrelay.serverSecurityVolumes" -}}
{{- if not .Values.auth.allowUnauthenticated }}
- name: api-keys
  secret:
    secretName: {{ .Values.auth.keys.existingSecret }}
    items: [{key: {{ .Values.auth.keys.existingSecretKey | quote }}, path: {{ .Values.auth.keys.existingSecretKey | quote }}}]
    defaultMode: 0440
{{- end }}
{{- if .Values.tls.existingSecret }}
- name: tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
    items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
      {{- if and .Values.tls.mutual (not .Values.tls.clientCA.existingSecret) }}
      - {key: {{ .Values.tls.clientCA.existingSecretKey | quote }}, path: {{ .Values.tls.clientCA.existingSecretKey | quote }}}
      {{- end }}
    defaultMode: 0440
{{- if and .Values.tls.mutual .Values.tls.clientCA.existingSecret }}
- name: client-ca
  secret:
    secretName: {{ .Values.tls.clientCA.existingSecret }}
    items: [{key: {{ .Values.tls.clientCA.existingSecretKey | quote }}, path: {{ .Values.tls.clientCA.existingSecretKey | quote }}}]
    defaultMode: 0440
{{- end }}
{{- end }}
{{- end }}

{{/* A connector's way to status: URL, API key, TLS. */}}
{{- define "scimrelay.connectorStatusEnv" -}}
- name: SCIMRELAY_STATUS_URL
  value: "{{ ternary "https" "http" (not (empty .Values.tls.existingSecret)) }}://{{ include "scimrelay.fullname" . }}-status:{{ .Values.status.service.grpcPort }}"
{{- if not .Values.auth.allowUnauthenticated }}
- name: SCIMRELAY_STATUS_API_KEY_FILE
  value: /run/scimrelay/status-key/{{ .Values.auth.connectorKey.existingSecretKey }}
{{- end }}
{{- if .Values.tls.existingSecret }}
{{- if .Values.tls.serverCA.existingSecretKey }}
- name: SCIMRELAY_STATUS_CA_FILE
  value: /run/scimrelay/status-ca/{{ .Values.tls.serverCA.existingSecretKey }}
{{- end }}
{{- if .Values.tls.mutual }}
- name: SCIMRELAY_STATUS_CLIENT_CERT_FILE
  value: /run/scimrelay/status-client/tls.crt
- name: SCIMRELAY_STATUS_CLIENT_KEY_FILE
  value: /run/scimrelay/status-client/tls.key
{{- end }}
{{- end }}
{{- end }}

{{- define "scimrelay.connectorStatusMounts" -}}
{{- if not .Values.auth.allowUnauthenticated }}
- name: status-key
  mountPath: /run/scimrelay/status-key
  readOnly: true
{{- end }}
{{- if .Values.tls.existingSecret }}
{{- if .Values.tls.serverCA.existingSecretKey }}
- name: status-ca
  mountPath: /run/scimrelay/status-ca
  readOnly: true
{{- end }}
{{- if .Values.tls.mutual }}
- name: status-client
  mountPath: /run/scimrelay/status-client
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{- define "scimrelay.connectorStatusVolumes" -}}
{{- if not .Values.auth.allowUnauthenticated }}
- name: status-key
  secret:
    secretName: {{ .Values.auth.connectorKey.existingSecret }}
    items: [{key: {{ .Values.auth.connectorKey.existingSecretKey | quote }}, path: {{ .Values.auth.connectorKey.existingSecretKey | quote }}}]
    defaultMode: 0440
{{- end }}
{{- if .Values.tls.existingSecret }}
{{- with .Values.tls.serverCA.existingSecretKey }}
- name: status-ca
  secret:
    {{- /* Only ca.crt is projected: the server's key never reaches a connector. */}}
    secretName: {{ $.Values.tls.serverCA.existingSecret | default $.Values.tls.existingSecret }}
    items: [{key: {{ . | quote }}, path: {{ . | quote }}}]
    defaultMode: 0440
{{- end }}
{{- if .Values.tls.mutual }}
- name: status-client
  secret:
    secretName: {{ .Values.tls.connectorCert.existingSecret }}
    items:
      - {key: tls.crt, path: tls.crt}
      - {key: tls.key, path: tls.key}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- end }}

{{/* Probes on the service's HTTP port: /healthz = alive, /readyz = connected to RabbitMQ.
     Pass (dict "mode" M): "http" (default), "https" (the port speaks TLS; the kubelet does not
     check the certificate) or "tcp" (mutual TLS: the kubelet has no client certificate, so only
     the TCP connect is checked). */}}
{{- define "scimrelay.probes" -}}
{{- $mode := .mode | default "http" }}
{{- if eq $mode "tcp" }}
startupProbe:
  tcpSocket: {port: http}
  periodSeconds: 2
  failureThreshold: 30
livenessProbe:
  tcpSocket: {port: http}
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  tcpSocket: {port: http}
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 3
{{- else }}
{{- $scheme := ternary "HTTPS" "HTTP" (eq $mode "https") }}
startupProbe:
  httpGet: {path: /healthz, port: http, scheme: {{ $scheme }}}
  periodSeconds: 2
  failureThreshold: 30
livenessProbe:
  httpGet: {path: /healthz, port: http, scheme: {{ $scheme }}}
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: http, scheme: {{ $scheme }}}
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 3
{{- end }}
{{- end }}

{{/* Scheduling and metadata shared by every pod template. */}}
{{- define "scimrelay.podExtras" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
