{{/*
The KubeRay RayService of the ranking service (mode=rayservice): a Ray cluster whose pods carry the ranking
selector labels (so the NetworkPolicy and PDB select them), the Serve application from serveConfigV2 with the
native gRPC proxy on the ranking port, and a serve Service named like every other recsys Service
(<release>-ranking) so the gateway's address does not depend on the mode.
*/}}

{{- define "recsys.ranking.serveConfig" -}}
{{- $port := include "recsys.port.for" (dict "root" . "component" "ranking") | int -}}
{{- $serve := .Values.ray.serve -}}
{{- $app := dict "name" (((.Values.global).ranking | default dict).app | default "ranking") "route_prefix" "/ranking" "import_path" $serve.importPath -}}
{{- with $serve.args }}{{ $_ := set $app "args" . }}{{ end -}}
{{- with $serve.deployments }}{{ $_ := set $app "deployments" . }}{{ end -}}
{{- $config := dict
  "proxy_location" "EveryNode"
  "http_options" (dict "host" "0.0.0.0" "port" ($serve.httpPort | int))
  "grpc_options" (dict "port" $port "grpc_servicer_functions" (list "recsys.v1.ranking_pb2_grpc.add_RankingServiceServicer_to_server" "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server"))
  "applications" (list $app)
-}}
{{- toYaml $config -}}
{{- end -}}

{{/* One Ray container: (dict "root" $ "name" "ray-head"|"ray-worker" "resources" {...} "head" bool). */}}
{{- define "recsys.ranking.rayContainer" -}}
{{- $root := .root -}}
{{- $port := include "recsys.port.for" (dict "root" $root "component" "ranking") -}}
name: {{ .name }}
image: {{ include "recsys.image" $root | quote }}
imagePullPolicy: {{ include "recsys.pullPolicy" $root }}
ports:
  {{- if .head }}
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
  - name: serve
    containerPort: {{ $root.Values.ray.serve.httpPort }}
    protocol: TCP
  - name: grpc
    containerPort: {{ $port }}
    protocol: TCP
  - name: metrics
    containerPort: 8080
    protocol: TCP
envFrom:
  - configMapRef:
      name: {{ include "recsys.fullname" $root }}-env
env:
  - name: RAY_USAGE_STATS_ENABLED
    value: "0"
  # Serve latency settings (services/ranking/README.md "Latency settings"; the local Ray gets the same from
  # runtime.FAST_PATH_ENV). Entries of .Values.env come later and override these.
  - name: RAY_SERVE_PROXY_USE_GRPC
    value: "1"
  - name: RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD
    value: "0"
  - name: RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP
    value: "0"
  - name: RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE
    value: "1000"
  - name: RAY_SERVE_FREEZE_GC_ON_STARTUP
    value: "1"
  - name: RAY_SERVE_ENABLE_DIRECT_INGRESS
    value: "0"
  - name: RAY_SERVE_CONTROL_LOOP_INTERVAL_S
    value: "0.5"
  - name: RAY_SERVE_METRICS_EXPORT_INTERVAL_MS
    value: "1000"
  - name: OMP_WAIT_POLICY
    value: "PASSIVE"
  {{- with include "recsys.credentialEnv.for" (dict "root" $root "uses" ($root.Values.uses | default list)) | trim }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with $root.Values.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
lifecycle:
  preStop:
    exec:
      command: ["/bin/sh", "-c", "ray stop"]
resources:
  {{- toYaml .resources | nindent 2 }}
securityContext:
  {{- include "recsys.containerSecurityContext" $root.Values | nindent 2 }}
volumeMounts:
  {{- include "recsys.volumeMounts" (dict "root" $root "shm" $root.Values.ray.shmSize "artifactsReadOnly" true) | nindent 2 }}
{{- end -}}

{{/* Pod template of a Ray node group: (dict "root" $ "container" <container yaml>). */}}
{{- define "recsys.ranking.rayPodTemplate" -}}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "recsys.podLabels" $root | nindent 4 }}
  annotations:
    checksum/env: {{ include "recsys.configmap" $root | sha256sum }}
    {{- with $root.Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- with include "recsys.imagePullSecrets" $root }}
  {{- . | nindent 2 }}
  {{- end }}
  serviceAccountName: {{ include "recsys.serviceAccountName" $root }}
  automountServiceAccountToken: false
  securityContext:
    {{- include "recsys.podSecurityContext" $root.Values | nindent 4 }}
  containers:
    - {{ .container | indent 6 | trim }}
  volumes:
    {{- /* Ray keeps its sessions, logs and sockets under /tmp/ray. */}}
    {{- include "recsys.volumes" (dict "root" $root "shm" $root.Values.ray.shmSize "tmpSize" "8Gi") | nindent 4 }}
  {{- with $root.Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{- define "recsys.ranking.rayService" -}}
{{- $ray := .Values.ray -}}
{{- $port := include "recsys.port.for" (dict "root" . "component" "ranking") -}}
{{- $headParams := deepCopy ($ray.head.rayStartParams | default dict) -}}
{{- if not $ray.head.schedulesReplicas }}{{ $_ := set $headParams "num-cpus" "0" }}{{ end -}}
apiVersion: ray.io/v1
kind: RayService
metadata:
  name: {{ include "recsys.fullname" . }}
  labels:
    {{- include "recsys.labels" . | nindent 4 }}
spec:
  rayClusterDeletionDelaySeconds: {{ $ray.rayClusterDeletionDelaySeconds }}
  upgradeStrategy:
    type: NewCluster
  serveService:
    metadata:
      name: {{ include "recsys.fullname" . }}
      labels:
        {{- include "recsys.labels" . | nindent 8 }}
    spec:
      type: {{ .Values.service.type | default "ClusterIP" }}
      ports:
        - name: grpc
          port: {{ $port }}
          targetPort: {{ $port }}
          protocol: TCP
          appProtocol: kubernetes.io/h2c
        - name: metrics
          port: 8080
          targetPort: 8080
          protocol: TCP
  serveConfigV2: |
    {{- include "recsys.ranking.serveConfig" . | nindent 4 }}
  rayClusterConfig:
    rayVersion: {{ $ray.rayVersion | quote }}
    enableInTreeAutoscaling: {{ $ray.autoscaler.enabled }}
    {{- if $ray.autoscaler.enabled }}
    autoscalerOptions:
      idleTimeoutSeconds: {{ $ray.autoscaler.idleTimeoutSeconds }}
      upscalingMode: {{ $ray.autoscaler.upscalingMode }}
      securityContext:
        {{- include "recsys.containerSecurityContext" .Values | nindent 8 }}
    {{- end }}
    headGroupSpec:
      rayStartParams:
        {{- range $key, $value := $headParams }}
        {{ $key }}: {{ toString $value | quote }}
        {{- end }}
      template:
        {{- $head := include "recsys.ranking.rayContainer" (dict "root" . "name" "ray-head" "resources" $ray.head.resources "head" true) }}
        {{- include "recsys.ranking.rayPodTemplate" (dict "root" . "container" $head) | nindent 8 }}
    workerGroupSpecs:
      - groupName: rankers
        replicas: {{ $ray.workers.replicas }}
        minReplicas: {{ $ray.workers.minReplicas }}
        maxReplicas: {{ $ray.workers.maxReplicas }}
        rayStartParams:
          {{- range $key, $value := $ray.workers.rayStartParams | default dict }}
          {{ $key }}: {{ toString $value | quote }}
          {{- else }} {}
          {{- end }}
        template:
          {{- $worker := include "recsys.ranking.rayContainer" (dict "root" . "name" "ray-worker" "resources" $ray.workers.resources "head" false) }}
          {{- include "recsys.ranking.rayPodTemplate" (dict "root" . "container" $worker) | nindent 10 }}
{{- end -}}

{{/*
Ray pods also talk among themselves (GCS, raylets, object transfer: many ports) and the KubeRay operator
reaches the dashboard, the dashboard agent and the Serve HTTP proxy. The recsys.networkPolicy of this chart
admits only the gateway to the gRPC port; this one adds exactly those Ray-internal paths.
*/}}
{{- define "recsys.ranking.rayNetworkPolicy" -}}
{{- if (((.Values.global).networkPolicy | default dict).enabled | default false) -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "recsys.fullname" . }}-ray
  labels:
    {{- include "recsys.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "recsys.selectorLabels" . | nindent 6 }}
  policyTypes:
    - Ingress
  ingress:
    - from:
        - podSelector:
            matchLabels:
              {{- include "recsys.selectorLabels" . | nindent 14 }}
    {{- with .Values.ray.operatorFrom }}
    - ports:
        - port: 8265
          protocol: TCP
        - port: 52365
          protocol: TCP
        - port: {{ $.Values.ray.serve.httpPort }}
          protocol: TCP
      from:
        {{- toYaml . | nindent 8 }}
    {{- end }}
{{- end -}}
{{- end -}}
