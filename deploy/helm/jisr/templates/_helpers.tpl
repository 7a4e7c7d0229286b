{{/* The release's name prefix of every object. */}}
{{- define "jisr.fullname" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "jisr.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "jisr.labels" -}}
app.kubernetes.io/name: jisr
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "gateway"). */}}
{{- define "jisr.selector" -}}
app.kubernetes.io/name: jisr
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The hub's NATS client URL. */}}
{{- define "jisr.natsURL" -}}
tls://{{ include "jisr.fullname" . }}-nats.{{ .Release.Namespace }}.svc:{{ .Values.nats.clientPort }}
{{- end -}}

{{/* Prometheus scrape annotations: (dict "port" 9090). */}}
{{- define "jisr.scrape" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end -}}

{{/* The Workload API socket, from the SPIFFE CSI driver. */}}
{{- define "jisr.spiffeVolume" -}}
- name: spiffe-workload-api
  csi:
    driver: {{ .Values.spiffe.csiDriver }}
    readOnly: true
{{- end -}}

{{- define "jisr.spiffeMount" -}}
- name: spiffe-workload-api
  mountPath: {{ .Values.spiffe.socketDir }}
  readOnly: true
{{- end -}}

{{/* Environment every jisr container gets. */}}
{{- define "jisr.env" -}}
- name: SPIFFE_ENDPOINT_SOCKET
  value: unix://{{ .Values.spiffe.socketDir }}/{{ .Values.spiffe.socketName }}
- name: JISR_FEDERATION
  value: /etc/jisr/federation/federation.yaml
- name: JISR_CERTS
  value: /etc/jisr/keys
- name: JISR_DATA
  value: /data
- name: JISR_LOG_FORMAT
  value: json
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end -}}

{{- define "jisr.federationVolume" -}}
- name: federation
  configMap:
    name: {{ include "jisr.fullname" . }}-federation
{{- end -}}

{{- define "jisr.federationMount" -}}
- name: federation
  mountPath: /etc/jisr/federation
  readOnly: true
{{- end -}}

{{- define "jisr.podSecurity" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
automountServiceAccountToken: false
{{- end -}}

{{- define "jisr.containerSecurity" -}}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
{{- end -}}

{{- /* The governance public key, in the federation ConfigMap (mounted by
jisr.federationMount). */}}
{{- define "jisr.governancePubArg" -}}
- --governance-pub=/etc/jisr/federation/governance.pub
{{- end -}}
