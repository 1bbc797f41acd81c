{{/*
The environment of a recsys workload: the variables declared in services/ (`recsys config --markdown`),
rendered into one ConfigMap per workload. Precedence, highest first: the workload's `config`,
`global.config`, then the defaults computed here (addresses of the other services, infrastructure endpoints,
in-pod paths). Values are strings (the schemas enforce it). Credentials never come through here: see
"recsys.credentialEnv.for".
*/}}

{{/* Where the in-pod state and the shared artifacts volume are mounted. */}}
{{- define "recsys.paths" -}}
{{- $paths := (.Values.global).paths | default dict -}}
state: {{ $paths.state | default "/var/lib/recsys" }}
artifacts: {{ $paths.artifacts | default "/var/lib/recsys/artifacts" }}
{{- end -}}

{{/* Strimzi cluster name (the umbrella renders the Kafka CR with it). */}}
{{- define "recsys.kafka.clusterName" -}}
{{- $kafka := (.Values.global).kafka | default dict -}}
{{- $kafka.clusterName | default (printf "%s-kafka" .Release.Name) | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{/* Kafka bootstrap servers: the Strimzi bootstrap Service, or global.kafka.bootstrap for an external cluster. */}}
{{- define "recsys.kafka.bootstrap" -}}
{{- $kafka := (.Values.global).kafka | default dict -}}
{{- if eq ($kafka.mode | default "strimzi") "external" -}}
{{- required "global.kafka.bootstrap is required when global.kafka.mode=external (host:port[,host:port])" $kafka.bootstrap -}}
{{- else -}}
{{- $tls := has ($kafka.securityProtocol | default "PLAINTEXT") (list "SSL" "SASL_SSL") -}}
{{- printf "%s-kafka-bootstrap:%d" (include "recsys.kafka.clusterName" .) (ternary 9093 9092 $tls) -}}
{{- end -}}
{{- end -}}

{{/* Name of the Strimzi KafkaUser whose Secret carries the SCRAM password. */}}
{{- define "recsys.kafka.userName" -}}
{{- printf "%s-recsys" (include "recsys.kafka.clusterName" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "recsys.kafka.sasl" -}}
{{- $kafka := (.Values.global).kafka | default dict -}}
{{- if has ($kafka.securityProtocol | default "PLAINTEXT") (list "SASL_PLAINTEXT" "SASL_SSL") -}}true{{- end -}}
{{- end -}}

{{/* Redis host:port: the chart's own Redis, or global.redis.address. */}}
{{- define "recsys.redis.address" -}}
{{- $redis := (.Values.global).redis | default dict -}}
{{- if eq ($redis.mode | default "chart") "external" -}}
{{- required "global.redis.address is required when global.redis.mode=external (host:port)" $redis.address -}}
{{- else -}}
{{- printf "%s-redis:6379" .Release.Name -}}
{{- end -}}
{{- end -}}

{{/* Milvus URI: a Milvus Lite file in the pod (embedded), the milvus chart's Service, or global.milvus.uri. */}}
{{- define "recsys.milvus.uri" -}}
{{- $milvus := (.Values.global).milvus | default dict -}}
{{- $mode := $milvus.mode | default "embedded" -}}
{{- if eq $mode "external" -}}
{{- required "global.milvus.uri is required when global.milvus.mode=external (http://host:19530)" $milvus.uri -}}
{{- else if eq $mode "chart" -}}
{{- printf "http://%s-milvus:19530" .Release.Name -}}
{{- else -}}
{{- printf "%s/milvus/recsys.db" (include "recsys.paths" . | fromYaml).state -}}
{{- end -}}
{{- end -}}

{{/* The computed defaults every workload gets: a YAML map of env name -> string. */}}
{{- define "recsys.env.defaults" -}}
{{- $g := .Values.global | default dict -}}
{{- $paths := include "recsys.paths" . | fromYaml -}}
{{- $kafka := $g.kafka | default dict -}}
{{- $topics := $kafka.topics | default dict -}}
{{- $kafkaCreds := ($g.credentials | default dict).kafka | default dict -}}
RECSYS_LOG_LEVEL: "INFO"
RECSYS_BIND_HOST: "0.0.0.0"
RECSYS_METRICS_PORT: {{ $g.metricsPort | default 9090 | int | toString | quote }}
RECSYS_GRPC_WORKERS: "16"
RECSYS_GRPC_MAX_CONCURRENT_RPCS: "256"
RECSYS_GRPC_MAX_MESSAGE_BYTES: "16777216"
RECSYS_SHUTDOWN_GRACE_S: "10"
RECSYS_VAR_DIR: {{ $paths.state | quote }}
RECSYS_MODELS_DIR: {{ printf "%s/models" $paths.artifacts | quote }}
RECSYS_BATCH_RECS_PATH: {{ printf "%s/batch/recommendations.csv" $paths.artifacts | quote }}
RECSYS_FEAST_DIR: {{ printf "%s/feast" $paths.artifacts | quote }}
RECSYS_FEATURES_OFFLINE_DIR: {{ printf "%s/features" $paths.artifacts | quote }}
{{- range $component := list "gateway" "features" "candidates" "ranking" "monitoring" }}
RECSYS_{{ upper $component }}_ADDR: {{ include "recsys.address.for" (dict "root" $ "component" $component) | quote }}
RECSYS_{{ upper $component }}_PORT: {{ include "recsys.port.for" (dict "root" $ "component" $component) | quote }}
{{- end }}
RECSYS_RANKING_APP: {{ ($g.ranking | default dict).app | default "ranking" | quote }}
RECSYS_KAFKA_BOOTSTRAP: {{ include "recsys.kafka.bootstrap" . | quote }}
RECSYS_KAFKA_EVENTS_TOPIC: {{ $topics.events | default "recsys.events" | quote }}
RECSYS_KAFKA_IMPRESSIONS_TOPIC: {{ $topics.impressions | default "recsys.impressions" | quote }}
RECSYS_KAFKA_PREDICTIONS_TOPIC: {{ $topics.predictions | default "recsys.predictions" | quote }}
RECSYS_KAFKA_DLQ_TOPIC: {{ $topics.deadLetter | default "recsys.dead-letter" | quote }}
RECSYS_KAFKA_ITEMS_TOPIC: {{ $topics.items | default "recsys.items" | quote }}
RECSYS_KAFKA_SECURITY_PROTOCOL: {{ $kafka.securityProtocol | default "PLAINTEXT" | quote }}
{{- if include "recsys.kafka.sasl" . }}
RECSYS_KAFKA_SASL_MECHANISM: {{ $kafka.saslMechanism | default "SCRAM-SHA-512" | quote }}
RECSYS_KAFKA_SASL_USERNAME: {{ $kafkaCreds.username | default (include "recsys.kafka.userName" .) | quote }}
{{- end }}
RECSYS_ONLINE_STORE: "redis"
RECSYS_MILVUS_URI: {{ include "recsys.milvus.uri" . | quote }}
{{- with .Values.dashboard }}
RECSYS_MONITORING_DASHBOARD_PORT: {{ ternary (.port | int | toString) "0" (.enabled | default false) | quote }}
{{- end }}
{{- end -}}

{{/*
Security settings of one workload, (dict "root" $ "component" "gateway"): TLS paths on the gRPC services (the
Secret of global.tls is mounted there), authentication on the public ones (gateway, monitoring), the Kafka CA.
*/}}
{{- define "recsys.env.security" -}}
{{- $sec := include "recsys.security" (dict "root" .root "component" .component) | fromYaml -}}
RECSYS_TLS_CERT: {{ ternary (printf "%s/tls.crt" $sec.tlsDir) "" $sec.tls | quote }}
RECSYS_TLS_KEY: {{ ternary (printf "%s/tls.key" $sec.tlsDir) "" $sec.tls | quote }}
RECSYS_TLS_CA: {{ ternary (printf "%s/ca.crt" $sec.tlsDir) "" $sec.tls | quote }}
RECSYS_TLS_CLIENT_AUTH: {{ ternary $sec.clientAuth "none" $sec.tls | quote }}
{{- /* Ray Serve's gRPC proxy (the ranking service) has no TLS: it is called in plaintext. */}}
RECSYS_TLS_PLAINTEXT_TARGETS: {{ ternary (include "recsys.address.for" (dict "root" .root "component" "ranking")) "" $sec.tls | quote }}
RECSYS_AUTH_MODE: {{ $sec.authMode | quote }}
RECSYS_AUTH_KEYS_FILE: {{ ternary (printf "%s/keys.json" $sec.authDir) "" (has $sec.authMode (list "api_key" "any")) | quote }}
RECSYS_AUTH_JWT_SECRET_FILE: {{ ternary (printf "%s/jwt-secret" $sec.authDir) "" (has $sec.authMode (list "jwt" "any")) | quote }}
RECSYS_AUTH_JWT_ISSUER: {{ $sec.jwtIssuer | quote }}
RECSYS_AUTH_JWT_AUDIENCE: {{ $sec.jwtAudience | quote }}
RECSYS_KAFKA_SSL_CAFILE: {{ ternary (printf "%s/%s" $sec.kafkaCaDir $sec.kafkaCaKey) "" (ne $sec.kafkaCaSecret "") | quote }}
{{- end -}}

{{/*
What global.tls, global.auth and global.kafka mean for one workload (dict "root" $ "component" "gateway"), as
YAML: tls (bool), tlsDir, tlsSecret, clientAuth, authMode, authDir, authSecret, jwtIssuer, jwtAudience,
kafkaCaSecret, kafkaCaKey, kafkaCaDir. The gRPC services get TLS, and so do the jobs (a client certificate:
the canary CronJob calls the monitoring service); the gateway and monitoring (the public surface) get
authentication; every workload gets the Kafka CA when the protocol is SSL / SASL_SSL.
*/}}
{{- define "recsys.security" -}}
{{- $g := .root.Values.global | default dict -}}
{{- $tls := $g.tls | default dict -}}
{{- $auth := $g.auth | default dict -}}
{{- $kafka := $g.kafka | default dict -}}
{{- $serves := has .component (list "gateway" "features" "candidates" "ranking" "monitoring" "jobs") -}}
{{- $public := has .component (list "gateway" "monitoring") -}}
{{- $authMode := ternary (toString ($auth.mode | default "off")) "off" $public -}}
{{- $authSecret := "" -}}
{{- if ne $authMode "off" -}}
{{- $authSecret = required "global.auth.existingSecret is required when global.auth.mode is not off (a Secret with keys.json and/or jwt-secret)" $auth.existingSecret -}}
{{- end -}}
{{- $kafkaTls := has ($kafka.securityProtocol | default "PLAINTEXT") (list "SSL" "SASL_SSL") -}}
{{- $kafkaCaSecret := "" -}}
{{- if and $kafkaTls $kafka.caSecret -}}
{{- $kafkaCaSecret = $kafka.caSecret -}}
{{- else if and $kafkaTls (eq ($kafka.mode | default "strimzi") "strimzi") -}}
{{- $kafkaCaSecret = printf "%s-cluster-ca-cert" (include "recsys.kafka.clusterName" .root) -}}
{{- end -}}
tls: {{ and $serves (eq (toString $tls.enabled) "true") }}
tlsDir: {{ $tls.mountPath | default "/etc/recsys/tls" | quote }}
tlsSecret: {{ $tls.secretName | default (printf "%s-%s-tls" .root.Release.Name .component | trunc 63 | trimSuffix "-") | quote }}
clientAuth: {{ ternary ($tls.publicClientAuth | default "none") ($tls.clientAuth | default "require") (eq .component "gateway") | quote }}
authMode: {{ $authMode | quote }}
authDir: {{ $auth.mountPath | default "/etc/recsys/auth" | quote }}
authSecret: {{ $authSecret | quote }}
jwtIssuer: {{ $auth.jwtIssuer | default "" | quote }}
jwtAudience: {{ $auth.jwtAudience | default "" | quote }}
kafkaCaSecret: {{ $kafkaCaSecret | quote }}
kafkaCaKey: {{ $kafka.caKey | default "ca.crt" | quote }}
kafkaCaDir: "/etc/recsys/kafka-ca"
{{- end -}}

{{/* The whole environment of the workload (dict "root" $ "config" <its config map>): a YAML map. */}}
{{- define "recsys.env.for" -}}
{{- $defaults := merge (include "recsys.env.security" . | fromYaml) (include "recsys.env.defaults" .root | fromYaml) -}}
{{- $global := deepCopy ((.root.Values.global).config | default dict) -}}
{{- $own := deepCopy (.config | default dict) -}}
{{- toYaml (merge $own $global $defaults) -}}
{{- end -}}

{{/* ConfigMap with the environment of a workload: (dict "root" $ "component" "jobs" "config" .Values.jobs.config). */}}
{{- define "recsys.configmap.for" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "recsys.fullname.for" . }}-env
  labels:
    {{- include "recsys.labels.for" . | nindent 4 }}
data:
  {{- range $name, $value := include "recsys.env.for" . | fromYaml }}
  {{ $name }}: {{ toString $value | quote }}
  {{- end }}
{{- end -}}

{{/* A service's own config: `config`, plus each `configJson` entry serialised as a JSON string. */}}
{{- define "recsys.ownConfig" -}}
{{- $own := deepCopy (.Values.config | default dict) -}}
{{- range $name, $value := .Values.configJson | default dict }}
{{- $_ := set $own $name (toJson $value) }}
{{- end }}
{{- toYaml $own -}}
{{- end -}}

{{- define "recsys.configmap" -}}
{{ include "recsys.configmap.for" (dict "root" . "component" (include "recsys.component" .) "config" (include "recsys.ownConfig" . | fromYaml)) }}
{{- end -}}

{{/*
Name of the Secret holding the credentials of one piece of infrastructure ("milvus", "redis", "kafka"):
global.credentials.<name>.existingSecret, the Strimzi KafkaUser's Secret, or the one the umbrella creates.
*/}}
{{- define "recsys.credentialSecret.for" -}}
{{- $creds := get ((.root.Values.global).credentials | default dict) .name | default dict -}}
{{- $kafka := (.root.Values.global).kafka | default dict -}}
{{- if $creds.existingSecret -}}
{{- $creds.existingSecret -}}
{{- else if and (eq .name "kafka") (eq ($kafka.mode | default "strimzi") "strimzi") (include "recsys.kafka.sasl" .root) -}}
{{- include "recsys.kafka.userName" .root -}}
{{- else -}}
{{- printf "%s-%s-credentials" .root.Release.Name .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
EnvVars read from the credential Secrets a workload uses: (dict "root" $ "uses" (list "redis" "kafka")).
global.credentials.<name>.env maps an environment variable to a key of that Secret. Kafka credentials only
with a SASL security protocol.
*/}}
{{- define "recsys.credentialEnv.for" -}}
{{- $root := .root -}}
{{- range $name := .uses }}
{{- if or (ne $name "kafka") (include "recsys.kafka.sasl" $root) }}
{{- $creds := get (($root.Values.global).credentials | default dict) $name | default dict }}
{{- $secret := include "recsys.credentialSecret.for" (dict "root" $root "name" $name) }}
{{- range $env, $key := $creds.env | default dict }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $key }}
{{- end }}
{{- if and (eq $name "redis") (not (hasKey ($creds.env | default dict) "RECSYS_REDIS_URL")) }}
- name: RECSYS_REDIS_URL
  value: {{ include "recsys.redis.url" (dict "root" $root "withPassword" (hasKey ($creds.env | default dict) "REDIS_PASSWORD")) | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The Feast online store's Redis URL. With a REDIS_PASSWORD variable from the redis credentials (listed before
it), Kubernetes expands $(REDIS_PASSWORD) into it; a Secret may instead carry the whole URL: map
RECSYS_REDIS_URL to its key in global.credentials.redis.env.
*/}}
{{- define "recsys.redis.url" -}}
{{- $redis := (.root.Values.global).redis | default dict -}}
{{- $scheme := ternary "rediss" "redis" ($redis.tls | default false) -}}
{{- $auth := ternary ":$(REDIS_PASSWORD)@" "" .withPassword -}}
{{- printf "%s://%s%s/%v" $scheme $auth (include "recsys.redis.address" .root) ($redis.db | default 0) -}}
{{- end -}}
