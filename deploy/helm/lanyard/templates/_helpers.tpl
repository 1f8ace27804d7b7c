{{/* Names and labels shared by every template. */}}
{{- define "lanyard.fullname" -}}
{{- if contains "lanyard" .Release.Name -}}{{ .Release.Name | trunc 40 | trimSuffix "-" }}{{- else -}}{{ printf "%s-lanyard" .Release.Name | trunc 40 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "lanyard.labels" -}}
app.kubernetes.io/name: lanyard
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "lanyard.selector" -}}
app.kubernetes.io/name: lanyard
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lanyard.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Secret names: cert-manager's, or the ones given. */}}
{{- define "lanyard.serverTlsSecret" -}}
{{- if .Values.tls.certManager.enabled -}}{{ include "lanyard.fullname" . }}-server-tls{{- else -}}{{ required "tls.serverSecret is required when tls.certManager.enabled is false" .Values.tls.serverSecret }}{{- end -}}
{{- end -}}
{{- define "lanyard.webhookTlsSecret" -}}
{{- if .Values.tls.certManager.enabled -}}{{ include "lanyard.fullname" . }}-webhook-tls{{- else -}}{{ required "tls.webhookSecret is required when tls.certManager.enabled is false" .Values.tls.webhookSecret }}{{- end -}}
{{- end -}}
{{- define "lanyard.x509CASecret" -}}
{{- if .Values.tls.certManager.enabled -}}{{ include "lanyard.fullname" . }}-x509-ca{{- else -}}{{ required "tls.x509CASecret is required when tls.certManager.enabled is false" .Values.tls.x509CASecret }}{{- end -}}
{{- end -}}

{{- define "lanyard.serverHost" -}}
{{ include "lanyard.fullname" . }}-server.{{ .Release.Namespace }}.svc
{{- end -}}

{{/* A restricted-profile container securityContext. */}}
{{- define "lanyard.restricted" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Which namespaces the webhooks see. */}}
{{- define "lanyard.webhookNamespaceSelector" -}}
{{- if .Values.webhook.namespaceSelector -}}
{{ toYaml .Values.webhook.namespaceSelector }}
{{- else -}}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values: [kube-system, {{ .Release.Namespace }}]
{{- end -}}
{{- end -}}

{{- define "lanyard.webhookClientConfig" -}}
service:
  name: {{ include "lanyard.fullname" .root }}-webhook
  namespace: {{ .root.Release.Namespace }}
  path: {{ .path }}
  port: 443
{{- if not .root.Values.tls.certManager.enabled }}
caBundle: {{ required "tls.webhookCABundle is required when tls.certManager.enabled is false" .root.Values.tls.webhookCABundle }}
{{- end }}
{{- end -}}
