{{/*
Pieces of every recsys pod: hardened security contexts, the writable volumes a read-only root filesystem
needs (/tmp and the state folder), the shared artifacts volume (model registry, training data, batch lists).
*/}}

{{- define "recsys.podSecurityContext" -}}
{{- $defaults := dict "runAsNonRoot" true "runAsUser" 10001 "runAsGroup" 10001 "fsGroup" 10001 "fsGroupChangePolicy" "OnRootMismatch" "seccompProfile" (dict "type" "RuntimeDefault") -}}
{{- toYaml (merge (deepCopy (.podSecurityContext | default dict)) $defaults) -}}
{{- end -}}

{{- define "recsys.containerSecurityContext" -}}
{{- $defaults := dict "runAsNonRoot" true "allowPrivilegeEscalation" false "readOnlyRootFilesystem" true "privileged" false "capabilities" (dict "drop" (list "ALL")) "seccompProfile" (dict "type" "RuntimeDefault") -}}
{{- toYaml (merge (deepCopy (.securityContext | default dict)) $defaults) -}}
{{- end -}}

{{/* Name of the PVC with the shared artifacts (created by the umbrella unless global.artifacts.existingClaim). */}}
{{- define "recsys.artifactsClaim" -}}
{{- $artifacts := (.Values.global).artifacts | default dict -}}
{{- $artifacts.existingClaim | default (printf "%s-artifacts" .Release.Name) -}}
{{- end -}}

{{- define "recsys.artifactsEnabled" -}}
{{- $artifacts := (.Values.global).artifacts | default dict -}}
{{- if ne (toString $artifacts.enabled) "false" -}}true{{- end -}}
{{- end -}}

{{/*
Volumes: (dict "root" $ "shm" <sizeLimit or ""> "stateClaim" <PVC name or ""> "tmpSize" <default 1Gi>
"artifacts" <false: leave out the shared artifacts volume> "component" <default: the chart's component>).
*/}}
{{- define "recsys.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .tmpSize | default "1Gi" }}
- name: state
  {{- if .stateClaim }}
  persistentVolumeClaim:
    claimName: {{ .stateClaim }}
  {{- else }}
  emptyDir:
    sizeLimit: 8Gi
  {{- end }}
{{- if and (include "recsys.artifactsEnabled" .root) (ne (toString .artifacts) "false") }}
- name: artifacts
  persistentVolumeClaim:
    claimName: {{ include "recsys.artifactsClaim" .root }}
{{- end }}
{{- if .shm }}
- name: shm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .shm }}
{{- end }}
{{- include "recsys.securityVolumes" (dict "root" .root "component" (.component | default (include "recsys.component" .root))) }}
{{- end -}}

{{/*
Secret volumes of global.tls, global.auth and the Kafka CA that a workload uses (see "recsys.security"):
(dict "root" $ "component" "jobs").
*/}}
{{- define "recsys.securityVolumes" -}}
{{- $sec := include "recsys.security" . | fromYaml }}
{{- if $sec.tls }}
- name: tls
  secret:
    secretName: {{ $sec.tlsSecret }}
    defaultMode: 288
{{- end }}
{{- if $sec.authSecret }}
- name: auth
  secret:
    secretName: {{ $sec.authSecret }}
    defaultMode: 288
{{- end }}
{{- if $sec.kafkaCaSecret }}
- name: kafka-ca
  secret:
    secretName: {{ $sec.kafkaCaSecret }}
    defaultMode: 288
    items:
      - key: {{ $sec.kafkaCaKey }}
        path: {{ $sec.kafkaCaKey }}
{{- end }}
{{- end -}}

{{- define "recsys.securityVolumeMounts" -}}
{{- $sec := include "recsys.security" . | fromYaml }}
{{- if $sec.tls }}
- name: tls
  mountPath: {{ $sec.tlsDir }}
  readOnly: true
{{- end }}
{{- if $sec.authSecret }}
- name: auth
  mountPath: {{ $sec.authDir }}
  readOnly: true
{{- end }}
{{- if $sec.kafkaCaSecret }}
- name: kafka-ca
  mountPath: {{ $sec.kafkaCaDir }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* Mounts: (dict "root" $ "shm" <sizeLimit or ""> "artifactsReadOnly" bool "artifacts" <false: none> "component" c). */}}
{{- define "recsys.volumeMounts" -}}
{{- $paths := include "recsys.paths" .root | fromYaml -}}
- name: tmp
  mountPath: /tmp
- name: state
  mountPath: {{ $paths.state }}
{{- if and (include "recsys.artifactsEnabled" .root) (ne (toString .artifacts) "false") }}
- name: artifacts
  mountPath: {{ $paths.artifacts }}
  readOnly: {{ ternary "true" "false" (.artifactsReadOnly | default false) }}
{{- end }}
{{- if .shm }}
- name: shm
  mountPath: /dev/shm
{{- end }}
{{- include "recsys.securityVolumeMounts" (dict "root" .root "component" (.component | default (include "recsys.component" .root))) }}
{{- end -}}

{{/*
A probe: (dict "kind" "grpc"|"grpc-tls"|"ray-serve" "port" N "spec" {periodSeconds...} "serverName" NAME).
grpc-tls (chosen when global.tls is on: the kubelet's native gRPC probe has no TLS) runs the Python health
check, which reads RECSYS_TLS_* like every client and checks the certificate for serverName (the Service name).
*/}}
{{- define "recsys.probe" -}}
{{- if eq .kind "ray-serve" -}}
exec:
  command: ["python", "-m", "recsys.common.healthcheck", "--ray-serve", "--timeout", "{{ .spec.timeoutSeconds | default 2 }}", "127.0.0.1:{{ .port }}"]
{{- else if eq .kind "grpc-tls" -}}
exec:
  command: ["python", "-m", "recsys.common.healthcheck", "--timeout", "{{ .spec.timeoutSeconds | default 2 }}", "--server-name", "{{ .serverName }}", "127.0.0.1:{{ .port }}"]
{{- else -}}
grpc:
  port: {{ .port }}
{{- end }}
{{ toYaml .spec }}
{{- end -}}

{{- define "recsys.imagePullSecrets" -}}
{{- with (.Values.global).imagePullSecrets -}}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end -}}
{{- end -}}
