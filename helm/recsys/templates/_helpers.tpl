{{/* Umbrella-only helpers; the shared ones live in helm/recsys-lib (charts/recsys-lib). */}}

{{- define "recsys.jobs.name" -}}
{{- include "recsys.fullname.for" (dict "root" . "component" "jobs") -}}
{{- end -}}

{{/* Infrastructure every job step may touch: all three, so a step can read, train, materialize and index. */}}
{{- define "recsys.jobs.uses" -}}
{{- toYaml (list "milvus" "redis" "kafka") -}}
{{- end -}}

{{/* A step skipped when Milvus is embedded (each candidates pod then indexes for itself). */}}
{{- define "recsys.jobs.keepStep" -}}
{{- $embedded := eq (((.root.Values.global).milvus | default dict).mode | default "embedded") "embedded" -}}
{{- if not (and .step.skipWhenMilvusEmbedded $embedded) -}}true{{- end -}}
{{- end -}}

{{/* One job step as a container: (dict "root" $ "step" {...}). */}}
{{- define "recsys.jobs.container" -}}
{{- $root := .root -}}
{{- $jobs := $root.Values.jobs -}}
name: {{ .step.name }}
image: {{ include "recsys.image.for" (dict "root" $root "component" "jobs" "image" $jobs.image) | quote }}
imagePullPolicy: {{ ($root.Values.global.image).pullPolicy | default "IfNotPresent" }}
command: ["recsys"]
{{- /* Each argument is a template: "{{ .Values.eventlog.uri }}" names the event log the writer fills. */}}
args:
  {{- range .step.args }}
  - {{ tpl (toString .) $root | toJson }}
  {{- end }}
envFrom:
  - configMapRef:
      name: {{ include "recsys.jobs.name" $root }}-env
{{- $credentialEnv := include "recsys.credentialEnv.for" (dict "root" $root "uses" (include "recsys.jobs.uses" $root | fromYamlArray)) | trim }}
{{- $storageEnv := ($root.Values.eventlog).storageEnv }}
{{- if or $credentialEnv $storageEnv }}
env:
  {{- with $credentialEnv }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- /* The event log's object-store credentials: the retrain step reads the log. */}}
  {{- with $storageEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
resources:
  {{- toYaml (.step.resources | default $jobs.resources) | nindent 2 }}
securityContext:
  {{- include "recsys.containerSecurityContext" $jobs | nindent 2 }}
volumeMounts:
  {{- include "recsys.volumeMounts" (dict "root" $root "artifactsReadOnly" false "component" "jobs") | nindent 2 }}
{{- end -}}

{{/* Pod template running steps in order: all but the last as init containers. (dict "root" $ "name" n "steps" [...]) */}}
{{- define "recsys.jobs.podTemplate" -}}
{{- $root := .root -}}
{{- $steps := list -}}
{{- range .steps }}{{ if include "recsys.jobs.keepStep" (dict "root" $root "step" .) }}{{ $steps = append $steps . }}{{ end }}{{ end -}}
metadata:
  labels:
    {{- include "recsys.labels.for" (dict "root" $root "component" "jobs") | nindent 4 }}
    {{- include "recsys.clientLabels" (dict "root" $root "clients" (include "recsys.jobs.uses" $root | fromYamlArray)) | trim | nindent 4 }}
    recsys.io/job: {{ .name }}
  annotations:
    checksum/env: {{ include "recsys.configmap.for" (dict "root" $root "component" "jobs" "config" $root.Values.jobs.config) | sha256sum }}
spec:
  restartPolicy: Never
  serviceAccountName: {{ include "recsys.jobs.name" $root }}
  automountServiceAccountToken: false
  {{- with include "recsys.imagePullSecrets" $root }}
  {{- . | nindent 2 }}
  {{- end }}
  securityContext:
    {{- include "recsys.podSecurityContext" $root.Values.jobs | nindent 4 }}
  {{- if gt (len $steps) 1 }}
  initContainers:
    {{- range initial $steps }}
    - {{ include "recsys.jobs.container" (dict "root" $root "step" .) | indent 6 | trim }}
    {{- end }}
  {{- end }}
  containers:
    - {{ include "recsys.jobs.container" (dict "root" $root "step" (last $steps)) | indent 6 | trim }}
  volumes:
    {{- include "recsys.volumes" (dict "root" $root "component" "jobs") | nindent 4 }}
  {{- with $root.Values.jobs.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.jobs.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* Steps left after skipping: how many (to leave out a job with nothing to do). */}}
{{- define "recsys.jobs.stepCount" -}}
{{- $root := .root -}}
{{- $n := 0 -}}
{{- range .steps }}{{ if include "recsys.jobs.keepStep" (dict "root" $root "step" .) }}{{ $n = add1 $n }}{{ end }}{{ end -}}
{{- $n -}}
{{- end -}}

{{- define "recsys.eventlog.name" -}}
{{- include "recsys.fullname.for" (dict "root" . "component" "eventlog") -}}
{{- end -}}

{{/* "true" when eventlog.uri is a path in the pods (no scheme, or file://), empty for an object-store URI. */}}
{{- define "recsys.eventlog.local" -}}
{{- $uri := toString (.Values.eventlog).uri -}}
{{- if or (hasPrefix "file://" $uri) (not (regexMatch "^[A-Za-z][A-Za-z0-9+.-]*://" $uri)) -}}true{{- end -}}
{{- end -}}

{{/* Name of the retrain CronJob when cronjobs.yaml renders it (cronJobs.retrain enabled, steps left), else "". */}}
{{- define "recsys.retrain.cronJobName" -}}
{{- with get (.Values.cronJobs | default dict) "retrain" -}}
{{- if and .enabled (gt (include "recsys.jobs.stepCount" (dict "root" $ "steps" .steps) | int) 0) -}}
{{- include "recsys.jobs.name" $ }}-retrain
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
"true" when drift starts retrains on Kubernetes: the monitoring subchart and its retrainOnDrift are on, and the
retrain CronJob is rendered (templates/monitoring-retrain.yaml).
*/}}
{{- define "recsys.retrainTrigger.enabled" -}}
{{- $monitoring := .Values.monitoring | default dict -}}
{{- if and $monitoring.enabled ($monitoring.retrainOnDrift).enabled (include "recsys.retrain.cronJobName" .) -}}true{{- end -}}
{{- end -}}

{{/* The monitoring component's name (<release>-monitoring), as its subchart names its objects. */}}
{{- define "recsys.monitoring.name" -}}
{{- include "recsys.fullname.for" (dict "root" . "component" ((.Values.monitoring).component | default "monitoring")) -}}
{{- end -}}

{{/* The monitoring pods' ServiceAccount, as the subchart picks it (recsys.serviceAccountName). */}}
{{- define "recsys.monitoring.serviceAccountName" -}}
{{- $sa := (.Values.monitoring).serviceAccount | default dict -}}
{{- if $sa.create -}}
{{- $sa.name | default (include "recsys.monitoring.name" .) -}}
{{- else -}}
{{- $sa.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/*
Whether a piece of observability renders: (dict "root" $ "enabled" <true|false|"auto">) -> "true" or "".
auto = the cluster serves the Prometheus Operator's PrometheusRule (helm template: --api-versions
monitoring.coreos.com/v1/PrometheusRule). The kind, not just the group: a cluster with only the ServiceMonitor
CRDs would refuse the PrometheusRule.
*/}}
{{- define "recsys.observability.on" -}}
{{- $mode := toString .enabled -}}
{{- if or (eq $mode "true") (and (eq $mode "auto") (.root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/PrometheusRule")) -}}
true
{{- end -}}
{{- end -}}

{{/*
The Prometheus jobs of the recsys targets, as a JSON list: observability.prometheusRule.alerts.targetDown.jobs,
else the components the chart's ServiceMonitors / PodMonitor scrape (their jobLabel is the component name):
every enabled service and the event log writer, when global.serviceMonitor.enabled (or the service's own
serviceMonitor.enabled) says so.
*/}}
{{- define "recsys.observability.jobs" -}}
{{- $jobs := .Values.observability.prometheusRule.alerts.targetDown.jobs | default list -}}
{{- if not $jobs -}}
{{- $global := eq (toString (.Values.global.serviceMonitor | default dict).enabled) "true" -}}
{{- range $name := list "gateway" "features" "candidates" "ranking" "monitoring" -}}
{{- $values := get $.Values $name | default dict -}}
{{- $own := dig "serviceMonitor" "enabled" nil $values -}}
{{- if and $values.enabled (ternary $own $global (kindIs "bool" $own)) -}}
{{- $jobs = append $jobs $name -}}
{{- end -}}
{{- end -}}
{{- if and .Values.eventlog.enabled $global -}}
{{- $jobs = append $jobs "eventlog" -}}
{{- end -}}
{{- end -}}
{{- toJson $jobs -}}
{{- end -}}

{{/* Labels of one alert: (dict "rule" .Values.observability.prometheusRule "alert" <its values>). */}}
{{- define "recsys.observability.ruleLabels" -}}
{{- $labels := merge (dict "severity" .alert.severity) (.rule.ruleLabels | default dict) -}}
{{- toYaml $labels -}}
{{- end -}}
