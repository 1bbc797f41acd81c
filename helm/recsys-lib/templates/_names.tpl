{{/*
Names, labels, ports and addresses shared by every recsys chart.

Helpers named "recsys.x" take the chart root (`.`) of a service subchart; helpers named "recsys.x.for" take
(dict "root" $ "component" "redis") so the umbrella chart can name its own components the same way.
*/}}

{{/* The component (service) a subchart deploys: its chart name, e.g. "features". */}}
{{- define "recsys.component" -}}
{{- default .Chart.Name .Values.component -}}
{{- end -}}

{{/* <release>-<component>, the name of every object of that component. */}}
{{- define "recsys.fullname.for" -}}
{{- printf "%s-%s" .root.Release.Name .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "recsys.fullname" -}}
{{- include "recsys.fullname.for" (dict "root" . "component" (include "recsys.component" .)) -}}
{{- end -}}

{{/* Labels that select the pods of one component of one release (never change them: selectors are immutable). */}}
{{- define "recsys.selectorLabels.for" -}}
app.kubernetes.io/name: recsys
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "recsys.selectorLabels" -}}
{{- include "recsys.selectorLabels.for" (dict "root" . "component" (include "recsys.component" .)) -}}
{{- end -}}

{{- define "recsys.labels.for" -}}
{{ include "recsys.selectorLabels.for" . }}
app.kubernetes.io/part-of: recsys
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{- define "recsys.labels" -}}
{{- include "recsys.labels.for" (dict "root" . "component" (include "recsys.component" .)) -}}
{{- end -}}

{{/*
Labels on a pod that uses a piece of infrastructure: the Redis, Kafka (Strimzi listener) and Milvus network
policies admit pods carrying them. Argument: (dict "root" $ "clients" (list "kafka" "redis")).
*/}}
{{- define "recsys.clientLabels" -}}
{{- range .clients }}
recsys.io/{{ . }}-client: "true"
{{- end }}
{{- end -}}

{{/* The default gRPC port of every component; global.ports overrides. */}}
{{- define "recsys.ports" -}}
{{- $defaults := dict "gateway" 50051 "features" 50052 "candidates" 50053 "ranking" 50054 "monitoring" 50055 -}}
{{- $global := (.Values.global).ports | default dict -}}
{{- toYaml (merge (deepCopy $global) $defaults) -}}
{{- end -}}

{{/* gRPC port of a component: (dict "root" $ "component" "features"). */}}
{{- define "recsys.port.for" -}}
{{- $ports := include "recsys.ports" .root | fromYaml -}}
{{- required (printf "no gRPC port known for component %q: set global.ports.%s" .component .component) (get $ports .component) -}}
{{- end -}}

{{/* host:port where a component answers: global.addresses.<component> (an external service) or its Service. */}}
{{- define "recsys.address.for" -}}
{{- $override := get ((.root.Values.global).addresses | default dict) .component -}}
{{- if $override -}}
{{- $override -}}
{{- else -}}
{{- printf "%s:%v" (include "recsys.fullname.for" .) (include "recsys.port.for" .) -}}
{{- end -}}
{{- end -}}

{{/* Image reference of a component: global registry/repository prefix, the component name, the tag. */}}
{{- define "recsys.image.for" -}}
{{- $global := (.root.Values.global).image | default dict -}}
{{- $own := .image | default dict -}}
{{- $registry := $own.registry | default $global.registry -}}
{{- $repository := $own.repository | default (printf "%s-%s" ($global.repository | default "recsys/recsys") .component) -}}
{{- $tag := $own.tag | default $global.tag | default .root.Chart.AppVersion -}}
{{- if $registry -}}
{{- printf "%s/%s:%s" $registry $repository $tag -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "recsys.image" -}}
{{- include "recsys.image.for" (dict "root" . "component" (include "recsys.component" .) "image" .Values.image) -}}
{{- end -}}

{{- define "recsys.pullPolicy" -}}
{{- (.Values.image).pullPolicy | default ((.Values.global).image).pullPolicy | default "IfNotPresent" -}}
{{- end -}}

{{- define "recsys.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "recsys.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}
