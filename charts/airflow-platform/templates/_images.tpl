{{/*
An image reference from an image value: repository@digest when `digest` is set (pinned by
content: what runs can never change under the same name), else repository:tag.
Call with the image dict, e.g. (include "platform.image" .Values.warehouse.image).
*/}}
{{- define "platform.image" -}}
{{- if .digest -}}
{{ .repository }}@{{ .digest }}
{{- else -}}
{{ .repository }}:{{ .tag }}
{{- end -}}
{{- end }}
