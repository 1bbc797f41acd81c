{{/* Service, ServiceAccount, HPA, PDB, NetworkPolicy and ServiceMonitor of a recsys service subchart. */}}

{{- define "recsys.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "recsys.fullname" . }}
  labels:
    {{- include "recsys.labels" . | nindent 4 }}
  {{- with .Values.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ .Values.service.type | default "ClusterIP" }}
  selector:
    {{- include "recsys.selectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ include "recsys.port.for" (dict "root" . "component" (include "recsys.component" .)) }}
      targetPort: grpc
      protocol: TCP
      appProtocol: kubernetes.io/h2c
    - name: metrics
      port: {{ (.Values.global).metricsPort | default 9090 }}
      targetPort: metrics
      protocol: TCP
    {{- if (.Values.dashboard).enabled }}
    - name: dashboard
      port: {{ .Values.dashboard.port }}
      targetPort: dashboard
      protocol: TCP
      appProtocol: http
    {{- end }}
{{- end -}}

{{- define "recsys.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "recsys.serviceAccountName" . }}
  labels:
    {{- include "recsys.labels" . | nindent 4 }}
  {{- with .Values.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
{{- end -}}
{{- end -}}

{{/* HorizontalPodAutoscaler (autoscaling/v2) on CPU (and memory when set). Kind defaults to Deployment. */}}
{{- define "recsys.hpa" -}}
{{- if .Values.autoscaling.enabled -}}
{{- $as := .Values.autoscaling -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "recsys.fullname" . }}
  labels:
    {{- include "recsys.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "recsys.fullname" . }}
  minReplicas: {{ $as.minReplicas }}
  maxReplicas: {{ $as.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $as.targetCPUUtilizationPercentage }}
    {{- with $as.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ . }}
    {{- end }}
  behavior:
    scaleUp:
      stabilizationWindowSeconds: 0
      policies:
        - type: Percent
          value: 100
          periodSeconds: 30
    scaleDown:
      stabilizationWindowSeconds: {{ $as.scaleDownStabilizationSeconds | default 300 }}
      policies:
        - type: Pods
          value: 1
          periodSeconds: 60
{{- end -}}
{{- end -}}

{{- define "recsys.pdb" -}}
{{- if .Values.pdb.enabled -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "recsys.fullname" . }}
  labels:
    {{- include "recsys.labels" . | nindent 4 }}
spec:
  {{- if .Values.pdb.minAvailable }}
  minAvailable: {{ .Values.pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ .Values.pdb.maxUnavailable | default 1 }}
  {{- end }}
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "recsys.selectorLabels" . | nindent 6 }}
{{- end -}}
{{- end -}}

{{/* Peers allowed to scrape the metrics port (global.networkPolicy.metricsFrom). */}}
{{- define "recsys.metricsIngress" -}}
{{- with ((.Values.global).networkPolicy | default dict).metricsFrom }}
- ports:
    - port: {{ ($.Values.global).metricsPort | default 9090 }}
      protocol: TCP
  from:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end -}}

{{/*
NetworkPolicy of a service: its gRPC port admits only the pods of the components named in
networkPolicy.allowedCallers (same release) and networkPolicy.extraFrom; a public service (the gateway)
admits every source. Nothing else reaches the pods except metrics scrapers.
*/}}
{{- define "recsys.networkPolicy" -}}
{{- if (((.Values.global).networkPolicy | default dict).enabled | default false) -}}
{{- $np := .Values.networkPolicy -}}
{{- $port := include "recsys.port.for" (dict "root" . "component" (include "recsys.component" .)) -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "recsys.fullname" . }}
  labels:
    {{- include "recsys.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "recsys.selectorLabels" . | nindent 6 }}
  policyTypes:
    - Ingress
  ingress:
    {{- if $np.public }}
    - ports:
        - port: {{ $port }}
          protocol: TCP
    {{- else if or $np.allowedCallers $np.extraFrom }}
    - ports:
        - port: {{ $port }}
          protocol: TCP
      from:
        {{- range $np.allowedCallers }}
        - podSelector:
            matchLabels:
              {{- include "recsys.selectorLabels.for" (dict "root" $ "component" .) | nindent 14 }}
        {{- end }}
        {{- with $np.extraFrom }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    {{- end }}
    {{- with include "recsys.metricsIngress" . | trim }}
    {{- . | nindent 4 }}
    {{- end }}
{{- end -}}
{{- end -}}

{{- define "recsys.serviceMonitor" -}}
{{- $sm := merge (deepCopy (.Values.serviceMonitor | default dict)) ((.Values.global).serviceMonitor | default dict) -}}
{{- if $sm.enabled -}}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "recsys.fullname" . }}
  labels:
    {{- include "recsys.labels" . | nindent 4 }}
    {{- with $sm.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  jobLabel: app.kubernetes.io/component
  selector:
    matchLabels:
      {{- include "recsys.selectorLabels" . | nindent 6 }}
  endpoints:
    - port: metrics
      path: /metrics
      interval: {{ $sm.interval | default "30s" }}
      scrapeTimeout: {{ $sm.scrapeTimeout | default "10s" }}
{{- end -}}
{{- end -}}

{{/*
cert-manager Certificate of a workload (global.tls.enabled with global.tls.certManager.enabled and no shared
global.tls.secretName): (dict "root" $ "component" "gateway" "client" false). A service's key pair serves and
calls the other services (server + client auth) and is valid for the Service's names and for localhost; a
client's (the jobs) only calls them. cert-manager writes tls.crt, tls.key and ca.crt into the Secret the pods
mount, and renews it in place (the servers reload it at the next handshake).
*/}}
{{- define "recsys.certificate.for" -}}
{{- $root := .root -}}
{{- $tls := ($root.Values.global).tls | default dict -}}
{{- $cm := $tls.certManager | default dict -}}
{{- if and (eq (toString $tls.enabled) "true") (eq (toString $cm.enabled) "true") (not $tls.secretName) -}}
{{- $name := include "recsys.fullname.for" . -}}
{{- $issuer := $cm.issuerRef | default dict -}}
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: {{ $name }}
  labels:
    {{- include "recsys.labels.for" . | nindent 4 }}
spec:
  secretName: {{ printf "%s-tls" $name | trunc 63 | trimSuffix "-" }}
  commonName: {{ $name }}
  {{- if not .client }}
  dnsNames:
    - {{ $name }}
    - {{ $name }}.{{ $root.Release.Namespace }}
    - {{ $name }}.{{ $root.Release.Namespace }}.svc
    - {{ $name }}.{{ $root.Release.Namespace }}.svc.{{ $cm.clusterDomain | default "cluster.local" }}
    - localhost
  ipAddresses:
    - 127.0.0.1
  {{- end }}
  duration: {{ $cm.duration | default "2160h" }}
  renewBefore: {{ $cm.renewBefore | default "360h" }}
  usages:
    {{- if not .client }}
    - server auth
    {{- end }}
    - client auth
    - digital signature
    - key encipherment
  privateKey:
    algorithm: ECDSA
    size: 256
    encoding: PKCS8
    rotationPolicy: Always
  issuerRef:
    name: {{ required "global.tls.certManager.issuerRef.name is required with global.tls.certManager.enabled" $issuer.name }}
    kind: {{ $issuer.kind | default "ClusterIssuer" }}
    group: {{ $issuer.group | default "cert-manager.io" }}
{{- end -}}
{{- end -}}

{{- define "recsys.certificate" -}}
{{- include "recsys.certificate.for" (dict "root" . "component" (include "recsys.component" .)) -}}
{{- end -}}

{{/*
Every object of a plain (Deployment-based) recsys service as YAML documents, empty ones left out. A service
subchart's only template is `{{ include "recsys.serviceObjects" . }}`; extend it with more templates of its own.
*/}}
{{- define "recsys.serviceObjects" -}}
{{- range $name := list "recsys.configmap" "recsys.serviceAccount" "recsys.statePvc" "recsys.deployment" "recsys.service" "recsys.hpa" "recsys.pdb" "recsys.networkPolicy" "recsys.serviceMonitor" "recsys.certificate" }}
{{- $doc := include $name $ | trim }}
{{- if $doc }}
---
{{ $doc }}
{{- end }}
{{- end }}
{{- end -}}
