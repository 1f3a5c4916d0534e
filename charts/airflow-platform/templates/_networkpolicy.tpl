{{/*
Helpers of networkpolicies.yaml (values: networkPolicies, <component>.networkPolicy).
*/}}

{{/* Metadata of one NetworkPolicy. Call with (dict "root" $ "name" "platform-..."). */}}
{{- define "platform.netpol.metadata" -}}
metadata:
  name: {{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "platform.componentLabels" (dict "root" .root "component" "network-policy") | nindent 4 }}
{{- end }}

{{/*
A label selector of pods of the official chart's release: `clients` (matchLabels,
matchExpressions) narrowed to tier=airflow, release=networkPolicies.airflowRelease.
Call with (dict "root" $ "clients" .Values.warehouse.networkPolicy.clients). Renders YAML.
*/}}
{{- define "platform.netpol.airflowPods" -}}
{{- $release := dict "tier" "airflow" "release" .root.Values.networkPolicies.airflowRelease -}}
matchLabels:
  {{- merge $release (deepCopy (.clients.matchLabels | default dict)) | toYaml | nindent 2 }}
{{- with .clients.matchExpressions }}
matchExpressions:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The selector of one component of the official chart. Call with (dict "root" $ "component" "api-server"). */}}
{{- define "platform.netpol.airflowComponent" -}}
{{- include "platform.netpol.airflowPods" (dict "root" .root "clients" (dict "matchLabels" (dict "component" .component))) }}
{{- end }}

{{/*
NetworkPolicy peers for IP blocks, each with the cloud metadata endpoint 169.254.169.254
excepted whenever its CIDR contains it (0.0.0.0/0 included): instance credentials must never
be reachable. A block that IS that address fails the render. (IPv6: only ::/0 is checked,
against AWS's fd00:ec2::254.)
Call with (list (dict "cidr" "10.0.0.0/8" "except" (list ...)) ...). Renders a YAML list.
*/}}
{{- define "platform.netpol.ipBlockPeers" -}}
{{- range $block := . }}
{{- $cidr := $block.cidr }}
{{- $except := $block.except | default list }}
{{- if contains ":" $cidr }}
{{- if eq $cidr "::/0" }}
{{- $except = append $except "fd00:ec2::254/128" }}
{{- end }}
{{- else }}
{{- $parts := splitList "/" $cidr }}
{{- $address := 0 }}
{{- range splitList "." (first $parts) }}
{{- $address = add (mul $address 256) (atoi .) }}
{{- end }}
{{- $prefix := atoi (last $parts) }}
{{- $blockSize := 1 }}
{{- range until (int (sub 32 $prefix)) }}
{{- $blockSize = mul $blockSize 2 }}
{{- end }}
{{- /* 2852039166 = 169.254.169.254 as a number: same block when equal after dividing by the block size. */}}
{{- if eq (div $address $blockSize) (div 2852039166 $blockSize) }}
{{- if eq $prefix 32 }}
{{- fail (printf "networkPolicies: %s is the cloud metadata endpoint, which is never allowed" $cidr) }}
{{- end }}
{{- if not (has "169.254.169.254/32" $except) }}
{{- $except = append $except "169.254.169.254/32" }}
{{- end }}
{{- end }}
{{- end }}
- ipBlock:
    cidr: {{ $cidr | quote }}
    {{- with $except }}
    except:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- end }}
{{- end }}

{{/* IP blocks (dicts with cidr) from a list of CIDR strings. Renders JSON. */}}
{{- define "platform.netpol.blocks" -}}
{{- $blocks := list }}
{{- range . }}{{ $blocks = append $blocks (dict "cidr" .) }}{{ end }}
{{- toJson $blocks }}
{{- end }}

{{/* NetworkPolicy peers from values: ipBlock peers go through ipBlockPeers, the others as they are. */}}
{{- define "platform.netpol.peers" -}}
{{- range . }}
{{- if .ipBlock }}
{{ include "platform.netpol.ipBlockPeers" (list .ipBlock) }}
{{- else }}
- {{ toYaml . | indent 2 | trim }}
{{- end }}
{{- end }}
{{- end }}

{{/* TCP ports of a rule. Call with a list of port numbers. */}}
{{- define "platform.netpol.tcpPorts" -}}
{{- include "platform.netpol.ports" (dict "ports" .) }}
{{- end }}

{{/* Ports of a rule, of one protocol (default TCP). Call with (dict "ports" (list 9125) "protocol" "UDP"). */}}
{{- define "platform.netpol.ports" -}}
{{- $protocol := .protocol | default "TCP" }}
{{- range .ports }}
- protocol: {{ $protocol }}
  port: {{ int . }}
{{- end }}
{{- end }}

{{/*
Where the Kubernetes API is, as JSON {"cidrs": [...], "ports": [...]}:
networkPolicies.kubernetesApi.cidrs when set; else looked up in the cluster (Service
default/kubernetes and its Endpoints: egress is matched after the Service's DNAT, so both the
Service IP and the endpoint addresses), with the endpoint ports added to
networkPolicies.kubernetesApi.ports. `helm template` has no cluster: empty cidrs.
Call with the root context.
*/}}
{{- define "platform.netpol.kubernetesApi" -}}
{{- $values := .Values.networkPolicies.kubernetesApi }}
{{- $cidrs := list }}
{{- $ports := list }}
{{- range $values.ports }}{{ $ports = append $ports (int .) }}{{ end }}
{{- if $values.cidrs }}
{{- $cidrs = $values.cidrs }}
{{- else }}
{{- $addresses := list }}
{{- $service := lookup "v1" "Service" "default" "kubernetes" | default dict }}
{{- range (dig "spec" "clusterIPs" list $service) }}{{ $addresses = append $addresses . }}{{ end }}
{{- $endpoints := lookup "v1" "Endpoints" "default" "kubernetes" | default dict }}
{{- range $subset := ($endpoints.subsets | default list) }}
{{- range ($subset.addresses | default list) }}{{ $addresses = append $addresses .ip }}{{ end }}
{{- range ($subset.ports | default list) }}{{ $ports = append $ports (int .port) }}{{ end }}
{{- end }}
{{- range (uniq $addresses) }}
{{- $cidrs = append $cidrs (printf "%s/%s" . (ternary "128" "32" (contains ":" .))) }}
{{- end }}
{{- end }}
{{- toJson (dict "cidrs" $cidrs "ports" (uniq $ports)) }}
{{- end }}

{{/*
One flow inside the namespace, as two policies: the server's ingress from its clients
(`name`) and the clients' egress to the server (`name`-clients). Both are needed: every pod
is under default-deny in both directions.
Call with (dict "root" $ "name" "platform-warehouse" "server" <selector YAML> "clients" <selector YAML> "ports" (list 5432)),
and "protocol" "UDP" for a UDP flow (default TCP).
*/}}
{{- define "platform.netpol.flow" -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
{{ include "platform.netpol.metadata" . }}
spec:
  podSelector:
    {{- .server | nindent 4 }}
  policyTypes:
    - Ingress
  ingress:
    - from:
        - podSelector:
            {{- .clients | nindent 12 }}
      ports:
        {{- include "platform.netpol.ports" . | trim | nindent 8 }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
{{ include "platform.netpol.metadata" (dict "root" .root "name" (printf "%s-clients" .name)) }}
spec:
  podSelector:
    {{- .clients | nindent 4 }}
  policyTypes:
    - Egress
  egress:
    - to:
        - podSelector:
            {{- .server | nindent 12 }}
      ports:
        {{- include "platform.netpol.ports" . | trim | nindent 8 }}
{{- end }}

{{/*
Egress of `clients` to IP blocks outside the cluster (external git, database, Kubernetes API).
Call with (dict "root" $ "name" "..." "clients" <selector YAML> "cidrs" (list ...) "ports" (list ...)).
*/}}
{{- define "platform.netpol.externalEgress" -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
{{ include "platform.netpol.metadata" . }}
spec:
  podSelector:
    {{- .clients | nindent 4 }}
  policyTypes:
    - Egress
  egress:
    - to:
        {{- include "platform.netpol.ipBlockPeers" (include "platform.netpol.blocks" .cidrs | fromJsonArray) | trim | nindent 8 }}
      ports:
        {{- include "platform.netpol.tcpPorts" .ports | trim | nindent 8 }}
{{- end }}
