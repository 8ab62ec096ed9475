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
