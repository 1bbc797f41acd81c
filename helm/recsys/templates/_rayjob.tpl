{{/*
The Ray pods of a RayJob (templates/rayjobs.yaml): one container from the jobs image with the jobs' environment,
credentials and volumes; KubeRay supplies the `ray start` command. (dict "root" $ "name" "ray-head"|"ray-worker"
"resources" {...} "head" bool)
*/}}
{{- define "recsys.jobs.rayContainer" -}}
{{- $root := .root -}}
{{- $jobs := $root.Values.jobs -}}
name: {{ .name }}
image: {{ include "recsys.image.for" (dict "root" $root "component" "jobs" "image" $jobs.image) | quote }}
imagePullPolicy: {{ ($root.Values.global.image).pullPolicy | default "IfNotPresent" }}
{{- if .head }}
ports:
  - name: gcs-server
    containerPort: 6379
    protocol: TCP
  - name: dashboard
    containerPort: 8265
    protocol: TCP
  - name: client
    containerPort: 10001
    protocol: TCP
{{- end }}
envFrom:
  - configMapRef:
      name: {{ include "recsys.jobs.name" $root }}-env
env:
  - name: RAY_USAGE_STATS_ENABLED
    value: "0"
  - name: OMP_WAIT_POLICY
    value: "PASSIVE"
  {{- with include "recsys.credentialEnv.for" (dict "root" $root "uses" (include "recsys.jobs.uses" $root | fromYamlArray)) | trim }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with ($root.Values.eventlog).storageEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
resources:
  {{- toYaml .resources | nindent 2 }}
securityContext:
  {{- include "recsys.containerSecurityContext" $jobs | nindent 2 }}
volumeMounts:
  {{- include "recsys.volumeMounts" (dict "root" $root "artifactsReadOnly" false "component" "jobs") | nindent 2 }}
{{- end -}}

{{/* Pod template of a RayJob's node group: (dict "root" $ "name" <definition> "container" <container yaml>). */}}
{{- define "recsys.jobs.rayPodTemplate" -}}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "recsys.labels.for" (dict "root" $root "component" "jobs") | nindent 4 }}
    {{- include "recsys.clientLabels" (dict "root" $root "clients" (include "recsys.jobs.uses" $root | fromYamlArray)) | trim | nindent 4 }}
    recsys.io/job: {{ .name }}
  annotations:
    checksum/env: {{ include "recsys.configmap.for" (dict "root" $root "component" "jobs" "config" $root.Values.jobs.config) | sha256sum }}
spec:
  serviceAccountName: {{ include "recsys.jobs.name" $root }}
  automountServiceAccountToken: false
  {{- with include "recsys.imagePullSecrets" $root }}
  {{- . | nindent 2 }}
  {{- end }}
  securityContext:
    {{- include "recsys.podSecurityContext" $root.Values.jobs | nindent 4 }}
  containers:
    - {{ .container | indent 6 | trim }}
  volumes:
    {{- /* Ray keeps its sessions, logs and sockets under /tmp/ray. */}}
    {{- include "recsys.volumes" (dict "root" $root "component" "jobs" "tmpSize" "8Gi") | nindent 4 }}
  {{- with $root.Values.jobs.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.jobs.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* Names of the enabled RayJob definitions, as a YAML list. */}}
{{- define "recsys.jobs.rayJobNames" -}}
{{- $names := list -}}
{{- range $name, $def := ((.Values.jobs).rayJobs | default dict).definitions }}{{ if $def.enabled }}{{ $names = append $names $name }}{{ end }}{{ end -}}
{{- toYaml $names -}}
{{- end -}}
