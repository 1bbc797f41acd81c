{{/*
The Deployment of a recsys gRPC service: `python -m recsys.<component>` with its ConfigMap environment,
credentials from Secrets, native gRPC probes, a hardened pod and a drain window on shutdown.
*/}}
{{- define "recsys.container" -}}
{{- $port := include "recsys.port.for" (dict "root" . "component" (include "recsys.component" .)) -}}
{{- $probeKind := .Values.probes.kind | default "grpc" -}}
{{- $sec := include "recsys.security" (dict "root" . "component" (include "recsys.component" .)) | fromYaml -}}
{{- /* Ranking's server is Ray Serve's proxy, which has no TLS: its probes stay plaintext. */}}
{{- if and $sec.tls (eq $probeKind "grpc") (ne (include "recsys.component" .) "ranking") }}{{ $probeKind = "grpc-tls" }}{{ end -}}
{{- $serverName := include "recsys.fullname" . -}}
name: {{ include "recsys.component" . }}
image: {{ include "recsys.image" . | quote }}
imagePullPolicy: {{ include "recsys.pullPolicy" . }}
command:
  {{- toYaml (.Values.command | default (list "python" "-m" (printf "recsys.%s" (include "recsys.component" .)))) | nindent 2 }}
{{- with .Values.args }}
args:
  {{- toYaml . | nindent 2 }}
{{- end }}
ports:
  - name: grpc
    containerPort: {{ $port }}
    protocol: TCP
  - name: metrics
    containerPort: {{ (.Values.global).metricsPort | default 9090 }}
    protocol: TCP
  {{- if (.Values.dashboard).enabled }}
  - name: dashboard
    containerPort: {{ .Values.dashboard.port }}
    protocol: TCP
  {{- end }}
envFrom:
  {{- with include "recsys.retrainTrigger.configMap" . }}
  # The retrain trigger's environment (the umbrella renders it); this service's own ConfigMap, after it, wins.
  - configMapRef:
      name: {{ . }}
  {{- end }}
  - configMapRef:
      name: {{ include "recsys.fullname" . }}-env
{{- $credentialEnv := include "recsys.credentialEnv.for" (dict "root" . "uses" (.Values.uses | default list)) | trim }}
{{- $apiEnv := include "recsys.retrainTrigger.env" . | trim }}
{{- if or $credentialEnv $apiEnv .Values.env }}
env:
  {{- with $credentialEnv }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with $apiEnv }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with .Values.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- with .Values.probes.startup }}
startupProbe:
  {{- include "recsys.probe" (dict "kind" $probeKind "port" $port "spec" . "serverName" $serverName) | nindent 2 }}
{{- end }}
{{- with .Values.probes.liveness }}
livenessProbe:
  {{- include "recsys.probe" (dict "kind" $probeKind "port" $port "spec" . "serverName" $serverName) | nindent 2 }}
{{- end }}
{{- with .Values.probes.readiness }}
readinessProbe:
  {{- include "recsys.probe" (dict "kind" $probeKind "port" $port "spec" . "serverName" $serverName) | nindent 2 }}
{{- end }}
lifecycle:
  preStop:
    exec:
      # Endpoints take a moment to drop a terminating pod: keep answering meanwhile, then SIGTERM drains.
      command: ["sleep", "{{ .Values.preStopSleepSeconds | default 5 }}"]
resources:
  {{- toYaml .Values.resources | nindent 2 }}
securityContext:
  {{- include "recsys.containerSecurityContext" .Values | nindent 2 }}
volumeMounts:
  {{- include "recsys.volumeMounts" (dict "root" . "shm" .Values.shmSize "artifactsReadOnly" (ne (toString .Values.artifactsReadOnly) "false")) | nindent 2 }}
  {{- with .Values.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* Pod labels: selector labels, chart labels, the infrastructure-client labels, and podLabels. */}}
{{- define "recsys.podLabels" -}}
{{ include "recsys.labels" . }}
{{- include "recsys.clientLabels" (dict "root" . "clients" (.Values.uses | default list)) }}
{{- with .Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "recsys.podSpec" -}}
{{- with include "recsys.imagePullSecrets" . }}
{{ . }}
{{- end }}
serviceAccountName: {{ include "recsys.serviceAccountName" . }}
{{- /* Only a pod that calls the Kubernetes API (monitoring's retrain trigger) holds its ServiceAccount token. */}}
automountServiceAccountToken: {{ if include "recsys.retrainTrigger.apiAccess" . }}true{{ else }}false{{ end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds | default 30 }}
securityContext:
  {{- include "recsys.podSecurityContext" .Values | nindent 2 }}
{{- $embeddedIndex := and (.Values.embeddedIndex).enabled (eq (((.Values.global).milvus).mode | default "embedded") "embedded") }}
{{- if or .Values.initContainers $embeddedIndex }}
initContainers:
  {{- if $embeddedIndex }}
  {{- /* The candidates chart: build this pod's Milvus Lite index from the model registry before serving. */}}
  {{- $main := include "recsys.container" . | fromYaml }}
  {{- $init := pick $main "image" "imagePullPolicy" "envFrom" "env" "securityContext" "volumeMounts" }}
  {{- $_ := set $init "name" "embedded-index" }}
  {{- $_ := set $init "command" (list "recsys") }}
  {{- $_ := set $init "args" .Values.embeddedIndex.args }}
  {{- $_ := set $init "resources" (.Values.embeddedIndex.resources | default .Values.resources) }}
  - {{ toYaml $init | indent 4 | trim }}
  {{- end }}
  {{- with .Values.initContainers }}
  {{- tpl (toYaml .) $ | nindent 2 }}
  {{- end }}
{{- end }}
containers:
  - {{ include "recsys.container" . | indent 4 | trim }}
volumes:
  {{- include "recsys.volumes" (dict "root" . "shm" .Values.shmSize "stateClaim" (include "recsys.stateClaim" .)) | nindent 2 }}
  {{- with .Values.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
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
{{- if .Values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml .Values.topologySpreadConstraints | nindent 2 }}
{{- else if .Values.spreadAcrossNodes }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "recsys.selectorLabels" . | nindent 8 }}
{{- end }}
{{- end -}}

{{/* PVC name of the service's persistent state folder (persistence.enabled), or empty for an emptyDir. */}}
{{- define "recsys.stateClaim" -}}
{{- if (.Values.persistence).enabled -}}
{{- (.Values.persistence).existingClaim | default (printf "%s-state" (include "recsys.fullname" .)) -}}
{{- end -}}
{{- end -}}

{{- define "recsys.statePvc" -}}
{{- $p := .Values.persistence | default dict -}}
{{- if and $p.enabled (not $p.existingClaim) -}}
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ include "recsys.stateClaim" . }}
  labels:
    {{- include "recsys.labels" . | nindent 4 }}
  annotations:
    helm.sh/resource-policy: keep
spec:
  accessModes: [ReadWriteOnce]
  {{- with $p.storageClassName }}
  storageClassName: {{ . }}
  {{- end }}
  resources:
    requests:
      storage: {{ $p.size | default "5Gi" }}
{{- end -}}
{{- end -}}

{{- define "recsys.deployment" -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "recsys.fullname" . }}
  labels:
    {{- include "recsys.labels" . | nindent 4 }}
spec:
  {{- if not .Values.autoscaling.enabled }}
  replicas: {{ .Values.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "recsys.selectorLabels" . | nindent 6 }}
  strategy:
    {{- if include "recsys.stateClaim" . }}
    # One ReadWriteOnce state volume: the old pod lets go of it before the new one starts.
    type: Recreate
    {{- else }}
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
    {{- end }}
  template:
    metadata:
      labels:
        {{- include "recsys.podLabels" . | nindent 8 }}
      annotations:
        checksum/env: {{ include "recsys.configmap" . | sha256sum }}
        {{- with .Values.retrainOnDrift }}
        checksum/retrain: {{ toJson . | sha256sum }}
        {{- end }}
        {{- with .Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      {{- include "recsys.podSpec" . | trim | nindent 6 }}
{{- end -}}

{{/*
The monitoring chart's retrainOnDrift (drift starts a retrain): the service creates a Job from the umbrella's
retrain CronJob through the Kubernetes API. The umbrella renders what depends on that CronJob being there
(helm/recsys/templates/monitoring-retrain.yaml): the ConfigMap <release>-monitoring-retrain with the trigger's
environment (RECSYS_MONITORING_RETRAIN_TRIGGER kubernetes or off, the CronJob's name, the least interval), and
the Role and RoleBinding. Here: every pod of a chart with retrainOnDrift reads that ConfigMap; with
retrainOnDrift.enabled it mounts its ServiceAccount token and gets its namespace (downward API).
*/}}
{{- define "recsys.retrainTrigger.configMap" -}}
{{- if hasKey .Values "retrainOnDrift" -}}
{{- printf "%s-retrain" (include "recsys.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "recsys.retrainTrigger.apiAccess" -}}
{{- if (.Values.retrainOnDrift).enabled -}}true{{- end -}}
{{- end -}}

{{- define "recsys.retrainTrigger.env" -}}
{{- if include "recsys.retrainTrigger.apiAccess" . }}
- name: RECSYS_MONITORING_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end }}
{{- end -}}
