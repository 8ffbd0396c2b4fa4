{{/*
Labels of every object. app.kubernetes.io/part-of is what the kustomize
base sets too; helm.sh/chart and app.kubernetes.io/managed-by are Helm's
own (`make verify` ignores them when it compares the chart with the base).
Object names are fixed (hostvol-*), whatever the release is called: the
CSIDriver, the StorageClasses and the kubelet socket allow one hostvol per
cluster anyway.
*/}}
{{- define "hostvol.labels" -}}
app.kubernetes.io/part-of: hostvol
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the node plugin's pods (immutable once installed). */}}
{{- define "hostvol.selectorLabels" -}}
app.kubernetes.io/name: hostvol
app.kubernetes.io/component: node
{{- end }}

{{/* The CSI driver name; also names the kubelet plugin directory. */}}
{{- define "hostvol.driverName" -}}hostvol.csi.io{{- end }}

{{/* The CSI socket's directory on the host. */}}
{{- define "hostvol.socketDir" -}}
{{ .Values.kubeletDir }}/plugins/{{ include "hostvol.driverName" . }}
{{- end }}

{{/* image REPOSITORY:TAG of an image value. */}}
{{- define "hostvol.image" -}}
{{ .repository }}:{{ .tag }}
{{- end }}

{{/* Checks of values that would otherwise fail only at run time. */}}
{{- define "hostvol.validate" -}}
{{- if not (has .Values.registration.mode (list "hostvol" "sidecar")) }}
{{- fail (printf "registration.mode %q: want hostvol or sidecar" .Values.registration.mode) }}
{{- end }}
{{- if not .Values.pools }}
{{- fail "pools: at least one pool is required" }}
{{- end }}
{{- $names := dict }}
{{- range .Values.pools }}
{{- if not (regexMatch "^[a-z0-9]([a-z0-9-]{0,56}[a-z0-9])?$" (toString .name)) }}
{{- fail (printf "pools: name %q: want lowercase letters, digits and '-', at most 58 characters" (toString .name)) }}
{{- end }}
{{- if hasKey $names .name }}
{{- fail (printf "pools: %q is given twice" .name) }}
{{- end }}
{{- $_ := set $names .name true }}
{{- if not (isAbs (toString .path)) }}
{{- fail (printf "pools: %q: path %q must be absolute" .name (toString .path)) }}
{{- end }}
{{- end }}
{{- end }}
