{{/* Names, labels and the pieces every DeepTrust pod shares. */}}

{{- define "deeptrust.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "deeptrust.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's resources: <fullname>-<component>. */}}
{{- define "deeptrust.componentName" -}}
{{- printf "%s-%s" (include "deeptrust.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "deeptrust.selectorLabels" -}}
app.kubernetes.io/name: {{ include "deeptrust.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "deeptrust.labels" -}}
{{ include "deeptrust.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: deeptrust
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of resources that belong to no single component. */}}
{{- define "deeptrust.chartLabels" -}}
{{ include "deeptrust.labels" (dict "root" . "component" "deeptrust") }}
{{- end -}}

{{- define "deeptrust.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "deeptrust.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The stages' image, or a component's own override ({repository, tag}). */}}
{{- define "deeptrust.image" -}}
{{- $image := mergeOverwrite (deepCopy .root.Values.image) (default dict .override) -}}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}

{{/*
The topic each Kafka-consuming stage reads (without prefix), as the code defines it
(processors/*.py `input_topic`, drift/service.py, the coming retrain consumer).
*/}}
{{- define "deeptrust.inputTopics" -}}
detect: uploads.v1
caption: detected.v1
tag: captioned.v1
moderation: enriched.v1
search: enriched.v1
retrain: retrain.v1
drift: embeddings.v1
{{- end -}}

{{/* The stage StatefulSets, in pipeline order. */}}
{{- define "deeptrust.stageNames" -}}
{{- list "detect" "caption" "tag" "moderation" "search" "retrain" | toJson -}}
{{- end -}}

{{/*
Overlays `over` on `base`, recursing into maps; any other value of `over` wins, false and
empty included (sprig's mergeOverwrite would keep base's true under an explicit false).
*/}}
{{- define "deeptrust.deepMerge" -}}
{{- $merged := deepCopy .base -}}
{{- range $key, $value := .over -}}
{{- $current := index $merged $key -}}
{{- if and (kindIs "map" $value) (kindIs "map" $current) -}}
{{- $_ := set $merged $key (include "deeptrust.deepMerge" (dict "base" $current "over" $value) | fromJson) -}}
{{- else -}}
{{- $_ := set $merged $key $value -}}
{{- end -}}
{{- end -}}
{{- toJson $merged -}}
{{- end -}}

{{/* One stage's values, as JSON: stageDefaults overlaid with stages.<name>. */}}
{{- define "deeptrust.stageValues" -}}
{{- $own := index .root.Values.stages .name | default dict -}}
{{- include "deeptrust.deepMerge" (dict "base" .root.Values.stageDefaults "over" $own) -}}
{{- end -}}

{{/* The consumer group of a stage: the runner's <prefix><stage>. */}}
{{- define "deeptrust.consumerGroup" -}}
{{- printf "%s%s" .root.Values.kafka.topicPrefix .name -}}
{{- end -}}

{{/* Name of the Secret holding the values given inline (`value:`) in these values. */}}
{{- define "deeptrust.inlineSecretName" -}}
{{- printf "%s-secrets" (include "deeptrust.fullname" .) -}}
{{- end -}}

{{/*
The secret references of the chart: environment variable → {existingSecret, key, value}.
A reference is used when it names an existing Secret or carries a value.
*/}}
{{- define "deeptrust.secretRefs" -}}
{{- $v := .Values -}}
DEEPTRUST_KAFKA_SASL_PASSWORD: {{ toJson $v.kafka.sasl.password }}
DEEPTRUST_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET: {{ toJson $v.kafka.sasl.oauthbearer.clientSecret }}
AWS_ACCESS_KEY_ID: {{ toJson $v.objectStore.s3.accessKeyId }}
AWS_SECRET_ACCESS_KEY: {{ toJson $v.objectStore.s3.secretAccessKey }}
DEEPTRUST_LLM_API_KEY: {{ toJson $v.llm.apiKey }}
DEEPTRUST_GATEWAY_API_KEYS: {{ toJson $v.gateway.apiKeys }}
HF_TOKEN: {{ toJson $v.vllm.hfToken }}
KAFKA_CA_CERT: {{ toJson $v.kafka.tls.ca }}
{{- if $v.alertWebhooks.enabled }}
{{- range $subscription := $v.alertWebhooks.subscriptions }}
{{- with $subscription.secret }}
{{ include "deeptrust.webhookSecretEnv" $subscription.name }}: {{ toJson . }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The variable holding one webhook subscription's signing secret (alert-webhooks.yaml). */}}
{{- define "deeptrust.webhookSecretEnv" -}}
{{- printf "DEEPTRUST_WEBHOOK_SECRET_%s" (regexReplaceAll "[^A-Z0-9]" (upper (toString .)) "_") -}}
{{- end -}}

{{/* A secretKeyRef for one of the secretRefs, or nothing when it is not set. */}}
{{- define "deeptrust.secretKeyRef" -}}
{{- $ref := index (include "deeptrust.secretRefs" .root | fromYaml) .env -}}
{{- if $ref.existingSecret -}}
{{- toYaml (dict "name" $ref.existingSecret "key" $ref.key) -}}
{{- else if $ref.value -}}
{{- toYaml (dict "name" (include "deeptrust.inlineSecretName" .root) "key" .env) -}}
{{- end -}}
{{- end -}}

{{/* An env entry reading one secret reference, or nothing. */}}
{{- define "deeptrust.secretEnv" -}}
{{- $ref := include "deeptrust.secretKeyRef" . -}}
{{- if $ref -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
{{ $ref | indent 6 }}
{{- end -}}
{{- end -}}

{{/* Where the stages reach the LLM: the chart's vLLM Service when enabled. */}}
{{- define "deeptrust.llmBaseUrl" -}}
{{- if .Values.vllm.enabled -}}
{{- printf "http://%s:%v/v1" (include "deeptrust.componentName" (dict "root" . "component" "vllm")) .Values.vllm.port -}}
{{- else -}}
{{- .Values.llm.baseUrl -}}
{{- end -}}
{{- end -}}

{{- define "deeptrust.llmModel" -}}
{{- if .Values.vllm.enabled -}}
{{- default .Values.vllm.model .Values.vllm.servedModelName -}}
{{- else -}}
{{- .Values.llm.model -}}
{{- end -}}
{{- end -}}

{{/* True when the brokers are reached over TLS. */}}
{{- define "deeptrust.kafkaTls" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end -}}
{{- end -}}

{{/* True when the Kafka CA certificate is mounted. */}}
{{- define "deeptrust.kafkaCa" -}}
{{- if include "deeptrust.secretKeyRef" (dict "root" . "env" "KAFKA_CA_CERT") }}true{{ end -}}
{{- end -}}

{{/* Pod annotations that roll the pods when their configuration changes. */}}
{{- define "deeptrust.configChecksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secrets: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end -}}

{{/*
The instance id of a Kafka service's pod: its name, which names the pod's transactional id
and static group membership. Only a StatefulSet's pod names (<name>-<ordinal>) are what the
id must be, unique and stable across restarts, so only StatefulSets include this.
*/}}
{{- define "deeptrust.instanceIdEnv" -}}
- name: DEEPTRUST_RUNNER_INSTANCE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end -}}

{{/* Environment of every DeepTrust container beside the shared ConfigMap: secrets, then .env. */}}
{{- define "deeptrust.commonEnv" -}}
{{- $entries := list -}}
{{- range $env := list "DEEPTRUST_KAFKA_SASL_PASSWORD" "DEEPTRUST_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET" "AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY" "DEEPTRUST_LLM_API_KEY" -}}
{{- with include "deeptrust.secretEnv" (dict "root" $.root "env" $env) -}}
{{- $entries = append $entries . -}}
{{- end -}}
{{- end -}}
{{- range $name, $value := .env -}}
{{- $entries = append $entries (printf "- name: %s\n  value: %s" $name ($value | toString | quote)) -}}
{{- end -}}
{{- join "\n" $entries -}}
{{- end -}}

{{/* Volumes every DeepTrust pod has: writable /tmp and cache, the Kafka CA when set. */}}
{{- define "deeptrust.commonVolumes" -}}
- name: tmp
  emptyDir: {}
- name: cache
  emptyDir: {}
{{- if include "deeptrust.kafkaCa" .root }}
- name: kafka-ca
  secret:
    secretName: {{ (include "deeptrust.secretKeyRef" (dict "root" .root "env" "KAFKA_CA_CERT") | fromYaml).name }}
    items:
      - key: {{ (include "deeptrust.secretKeyRef" (dict "root" .root "env" "KAFKA_CA_CERT") | fromYaml).key }}
        path: ca.crt
{{- end }}
{{- end -}}

{{- define "deeptrust.commonVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: cache
  mountPath: /home/deeptrust/.cache
{{- if include "deeptrust.kafkaCa" .root }}
- name: kafka-ca
  mountPath: {{ .root.Values.kafka.tls.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* The object store's volume for stages that read or write images, without a bucket. */}}
{{- define "deeptrust.objectsVolume" -}}
{{- if not .Values.objectStore.s3.bucket -}}
- name: objects
{{- if .Values.objectStore.local.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.objectStore.local.existingClaim }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}
{{- end -}}

{{- define "deeptrust.objectsVolumeMount" -}}
{{- if not .Values.objectStore.s3.bucket -}}
- name: objects
  mountPath: /data/objects
{{- end -}}
{{- end -}}

{{/* An HTTP probe on the metrics port: the chart's path and port, the values' timing. */}}
{{- define "deeptrust.httpProbe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
{{ toYaml .timing }}
{{- end -}}

{{/* vLLM's health endpoint, for the stages that wait for it. */}}
{{- define "deeptrust.vllmHealthUrl" -}}
{{- printf "http://%s:%v/health" (include "deeptrust.componentName" (dict "root" . "component" "vllm")) .Values.vllm.port -}}
{{- end -}}

{{/* True when stage .name calls the LLM and the chart runs vLLM. */}}
{{- define "deeptrust.waitsForVllm" -}}
{{- $models := .root.Values.models -}}
{{- if .root.Values.vllm.enabled -}}
{{- if or (and (eq .name "tag") (eq $models.tagBackend "llm")) (and (eq .name "caption") (eq $models.captionBackend "labels-llm")) }}true{{ end -}}
{{- end -}}
{{- end -}}
