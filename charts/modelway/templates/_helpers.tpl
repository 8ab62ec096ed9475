{{/* Names: <release>-modelway unless the release name already says modelway. */}}
{{- define "modelway.fullname" -}}
{{- if contains "modelway" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-modelway" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modelway.controller" -}}
{{- printf "%s-controller" (include "modelway.fullname" .) -}}
{{- end -}}

{{- define "modelway.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "modelway.controller" .) -}}
{{- end -}}

{{- define "modelway.webhookName" -}}
{{- printf "%s-sidecar-injector" (include "modelway.fullname" .) -}}
{{- end -}}

{{- define "modelway.certSecret" -}}
{{- printf "%s-certs" (include "modelway.fullname" .) -}}
{{- end -}}

{{- define "modelway.tlsSecret" -}}
{{- printf "%s-tls" (include "modelway.fullname" .) -}}
{{- end -}}

{{- define "modelway.labels" -}}
app.kubernetes.io/name: modelway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "modelway.selectorLabels" -}}
app.kubernetes.io/name: modelway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "modelway.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "modelway.sidecarImage" -}}
{{- $repo := .Values.sidecar.image.repository | default .Values.image.repository -}}
{{- $tag := .Values.sidecar.image.tag | default .Values.image.tag | default .Chart.AppVersion -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/* The DNS names sidecars and the API server use; the serving certificate carries them all. */}}
{{- define "modelway.serviceHosts" -}}
{{- $svc := include "modelway.controller" . -}}
{{- $ns := .Release.Namespace -}}
- {{ $svc }}
- {{ $svc }}.{{ $ns }}
- {{ $svc }}.{{ $ns }}.svc
- {{ $svc }}.{{ $ns }}.svc.cluster.local
{{- end -}}

{{/* The injected sidecar's settings: the controller's --inject-config file. */}}
{{- define "modelway.injectConfig" -}}
image: {{ include "modelway.sidecarImage" . | quote }}
imagePullPolicy: {{ .Values.sidecar.image.pullPolicy | default .Values.image.pullPolicy | quote }}
controllerURL: {{ printf "https://%s.%s.svc:%d" (include "modelway.controller" .) .Release.Namespace (int .Values.controller.ports.stream) | quote }}
appPort: {{ .Values.sidecar.ports.app }}
adminPort: {{ .Values.sidecar.ports.admin }}
logLevel: {{ .Values.sidecar.logLevel | default .Values.logLevel | quote }}
otlpEndpoint: {{ .Values.otlp.endpoint | quote }}
otelEnv:
  {{- include "modelway.otelEnv" . | nindent 2 }}
tokenExpirationSeconds: {{ .Values.sidecar.tokenExpirationSeconds }}
startupTimeoutSeconds: {{ .Values.sidecar.startupTimeoutSeconds }}
setAppEnv: {{ .Values.injection.setAppEnv }}
accessLog: {{ .Values.sidecar.accessLog.enabled }}
accessLogSample: {{ .Values.sidecar.accessLog.sample }}
maxInFlightPerBackend: {{ .Values.sidecar.backpressure.maxInFlightPerBackend }}
maxInFlightPerRoute: {{ .Values.sidecar.backpressure.maxInFlightPerRoute }}
maxQueued: {{ .Values.sidecar.backpressure.maxQueued }}
queueWaitSeconds: {{ .Values.sidecar.backpressure.queueWaitSeconds }}
httpsProxy: {{ .Values.sidecar.egress.httpsProxy | quote }}
httpProxy: {{ .Values.sidecar.egress.httpProxy | quote }}
noProxy: {{ .Values.sidecar.egress.noProxy | quote }}
resources:
  {{- toYaml .Values.sidecar.resources | nindent 2 }}
{{- end -}}


{{/* Sampling, metric export and content capture, the same for the controller and the sidecars. */}}
{{- define "modelway.otelEnv" -}}
OTEL_TRACES_SAMPLER: {{ .Values.otlp.sampler | quote }}
{{- with .Values.otlp.samplerArg }}
OTEL_TRACES_SAMPLER_ARG: {{ . | quote }}
{{- end }}
OTEL_METRIC_EXPORT_INTERVAL: {{ mul .Values.otlp.metricExportIntervalSeconds 1000 | quote }}
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: {{ .Values.otlp.captureMessageContent | quote }}
{{- end -}}

{{/* The chart-run Redis for limit counters: its Deployment, Service and Secret. */}}
{{- define "modelway.redis" -}}
{{- printf "%s-redis" (include "modelway.fullname" .) -}}
{{- end -}}

{{- define "modelway.redisSelectorLabels" -}}
app.kubernetes.io/name: modelway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: limits-redis
{{- end -}}

{{- define "modelway.redisImage" -}}
{{- $image := .Values.redis.image -}}
{{- if $image.digest -}}
{{- printf "%s:%s@%s" $image.repository $image.tag $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository $image.tag -}}
{{- end -}}
{{- end -}}

{{/* Where the limit counters live: "" (each sidecar in its memory), "chart" (the
     chart-run Redis), "url" (redis.url) or "secret" (redis.existingSecret).
     Fails on values that say two things at once. */}}
{{- define "modelway.limitStore" -}}
{{- $r := .Values.redis -}}
{{- $set := list -}}
{{- if $r.enabled }}{{ $set = append $set "redis.enabled" }}{{ end -}}
{{- if $r.url }}{{ $set = append $set "redis.url" }}{{ end -}}
{{- if $r.existingSecret }}{{ $set = append $set "redis.existingSecret" }}{{ end -}}
{{- if gt (len $set) 1 -}}
{{- fail (printf "set only one of %s: they each name where the limit counters live" (join ", " $set)) -}}
{{- end -}}
{{- if and $r.url (regexMatch "^[a-z+]+://[^/]*@" $r.url) -}}
{{- fail "redis.url holds credentials: put the whole URL in a Secret and name it in redis.existingSecret (and redis.existingSecretKey)" -}}
{{- end -}}
{{- if and $r.enabled $r.cluster -}}
{{- fail "redis.cluster is for an existing Redis Cluster (redis.url or redis.existingSecret); the chart-run Redis is one node" -}}
{{- end -}}
{{- if $r.enabled }}chart{{ else if $r.url }}url{{ else if $r.existingSecret }}secret{{ end -}}
{{- end -}}

{{/* The chart-run Redis' password: the one in its Secret when the release already has it
     (helm upgrade), else a new one; made once per render (kept in .Values) so that the
     Secret and the checksums that roll Redis and the controller agree. */}}
{{- define "modelway.redisPassword" -}}
{{- if not (hasKey .Values.redis "renderedPassword") -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "modelway.redis" .) -}}
{{- if and $existing $existing.data $existing.data.password -}}
{{- $_ := set .Values.redis "renderedPassword" ($existing.data.password | b64dec) -}}
{{- else -}}
{{- $_ := set .Values.redis "renderedPassword" (randAlphaNum 40) -}}
{{- end -}}
{{- end -}}
{{- .Values.redis.renderedPassword -}}
{{- end -}}

{{- define "modelway.redisURL" -}}
{{- printf "redis://:%s@%s.%s.svc:6379/0" (include "modelway.redisPassword" .) (include "modelway.redis" .) .Release.Namespace -}}
{{- end -}}
