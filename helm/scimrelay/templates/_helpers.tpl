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
- name: SCIMRELAY_LOG_FORMAT
  value: {{ .Values.logging.format | quote }}
{{- if .Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otel.endpoint | quote }}
{{- end }}
{{- end }}

{{/* Probes on the service's HTTP port: /healthz = alive, /readyz = connected to RabbitMQ. */}}
{{- define "scimrelay.probes" -}}
startupProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 2
  failureThreshold: 30
livenessProbe:
  httpGet: {path: /healthz, port: http}
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: http}
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 3
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

{{/* The connectors: values key -> binary. */}}
{{- define "scimrelay.connectorBinaries" -}}
scim: scim-connector
github: github-connector
aws: aws-connector
salesforce: salesforce-connector
{{- end }}
