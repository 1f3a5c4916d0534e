{{/*
Helpers of the airflow-platform chart.

Object names are fixed (see values.yaml): the official Airflow chart's values refer to them.
*/}}

{{/* Labels every object carries. */}}
{{- define "platform.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: airflow-platform
{{- end }}

{{/*
Labels of one object of a component: platform.labels + app.kubernetes.io/component.
Call with (dict "root" $ "component" "warehouse").
*/}}
{{- define "platform.componentLabels" -}}
{{ include "platform.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Selector labels of a component's pods (a subset of platform.componentLabels; immutable in
StatefulSets and Deployments, hence no version in it). Same arguments as componentLabels.
*/}}
{{- define "platform.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The value of key `key` of Secret `secret` as it exists in the cluster (decoded), else
`generated`. That is how the credentials are generated once and then kept: `lookup` finds the
Secret on every upgrade. (`helm template` and client-side dry runs have no cluster: they
always show freshly generated values.)
Call with (dict "root" $ "secret" "warehouse-connection" "key" "password" "generated" (randAlphaNum 32)).
*/}}
{{- define "platform.keptValue" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret | default dict -}}
{{- $encoded := dig "data" .key "" $existing -}}
{{- if $encoded -}}
{{- $encoded | b64dec -}}
{{- else -}}
{{- .generated -}}
{{- end -}}
{{- end }}

{{/*
A Secret kept on uninstall ("helm.sh/resource-policy": keep), so that credentials outlive the
release together with the databases' volumes.
Call with (dict "root" $ "name" "..." "data" (dict "key" "plain value" ...)).
*/}}
{{- define "platform.keptSecret" -}}
apiVersion: v1
kind: Secret
metadata:
  name: {{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "platform.componentLabels" (dict "root" .root "component" "credentials") | nindent 4 }}
  annotations:
    helm.sh/resource-policy: keep
type: Opaque
data:
  {{- range $key, $value := .data }}
  {{ $key }}: {{ $value | b64enc | quote }}
  {{- end }}
{{- end }}

{{/*
A PostgreSQL server: a headless Service and a one-replica StatefulSet with a volumeClaimTemplate.
Used for the warehouse and for Airflow's metadata database.
Call with (dict
  "root" $                              the top-level context
  "name" "platform-warehouse"           Service and StatefulSet name (fixed)
  "component" "warehouse"               app.kubernetes.io/component
  "values" .Values.warehouse            image, database, username, persistence, postgresConfig, resources
  "secretName" "warehouse-connection"   Secret whose key `password` is the application role's password
  "superuserSecretName" "warehouse-superuser"   Secret whose key `password` is the superuser's
).
The server is bootstrapped by the superuser `postgres` (POSTGRES_USER). The application role
(values.username) is made by files/postgres-app-role.sql, which the image's entrypoint runs
once on an empty volume: LOGIN, no other attribute, owner of values.database only.
files/postgres-superuser-local-only.sh, run next, keeps `postgres` off TCP (pg_hba.conf reject):
it logs in over the pod's local socket only.
*/}}
{{- define "platform.postgres" -}}
{{- $selector := include "platform.selectorLabels" (dict "root" .root "component" .component) -}}
{{- $labels := include "platform.componentLabels" (dict "root" .root "component" .component) -}}
{{- $v := .values -}}
{{- if eq $v.username "postgres" -}}
{{- fail (printf "%s: username must not be postgres: that is the bootstrap superuser, the application gets a role of its own" .component) -}}
{{- end }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .name }}-initdb
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- $labels | nindent 4 }}
data:
  # Run by the image's entrypoint on an empty volume only (see files/postgres-app-role.sql).
  app-role.sql: |-
    {{- .root.Files.Get "files/postgres-app-role.sql" | nindent 4 }}
  # Run after it (the entrypoint sorts): the superuser may log in over the local socket only
  # (see files/postgres-superuser-local-only.sh; on an older volume, run it by hand).
  superuser-local-only.sh: |-
    {{- .root.Files.Get "files/postgres-superuser-local-only.sh" | nindent 4 }}
  # Not run by the entrypoint (neither *.sh nor *.sql): run by hand, once, on a volume made
  # before the superuser split (see the file, and values.yaml at `warehouse`).
  migrate-legacy-superuser.psql: |-
    {{- .root.Files.Get "files/postgres-migrate-legacy-superuser.psql" | nindent 4 }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- $labels | nindent 4 }}
spec:
  # Headless: the StatefulSet's governing Service; its DNS name resolves to the ready pod.
  clusterIP: None
  selector:
    {{- $selector | nindent 4 }}
  ports:
    - name: postgresql
      port: 5432
      targetPort: postgresql
      protocol: TCP
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- $labels | nindent 4 }}
spec:
  serviceName: {{ .name }}
  replicas: 1
  selector:
    matchLabels:
      {{- $selector | nindent 6 }}
  updateStrategy:
    type: RollingUpdate
  # The data volume outlives the release and a scale-down (as do the Secrets with its password).
  persistentVolumeClaimRetentionPolicy:
    whenDeleted: Retain
    whenScaled: Retain
  template:
    metadata:
      labels:
        {{- $labels | nindent 8 }}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- with .root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      # The postgres image's own user (uid/gid 999); fsGroup makes the volume writable by it.
      securityContext:
        runAsUser: 999
        runAsGroup: 999
        runAsNonRoot: true
        fsGroup: 999
        fsGroupChangePolicy: OnRootMismatch
        seccompProfile:
          type: RuntimeDefault
      # The image's STOPSIGNAL is SIGINT (fast shutdown); leave it time to finish.
      terminationGracePeriodSeconds: 60
      containers:
        - name: postgres
          image: {{ include "platform.image" $v.image | quote }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          {{- with $v.postgresConfig }}
          args:
            - postgres
            {{- range $name, $value := . }}
            - "-c"
            - {{ printf "%s=%v" $name $value | quote }}
            {{- end }}
          {{- end }}
          ports:
            - name: postgresql
              containerPort: 5432
              protocol: TCP
          env:
            - name: POSTGRES_DB
              value: {{ $v.database | quote }}
            # The bootstrap superuser: initdb and the init scripts only. Nothing else knows
            # its password (Secret {{ .superuserSecretName }} is mounted here only).
            - name: POSTGRES_USER
              value: postgres
            - name: POSTGRES_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {{ .superuserSecretName }}
                  key: password
            # The application role, read by app-role.sql with \getenv (never on a command line).
            - name: APP_USER
              value: {{ $v.username | quote }}
            - name: APP_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {{ .secretName }}
                  key: password
            # A subdirectory of the volume: initdb wants an empty directory, and a volume's
            # root may hold lost+found.
            - name: PGDATA
              value: /var/lib/postgresql/data/pgdata
          # Over TCP, so that the entrypoint's temporary init server (socket only) is not
          # mistaken for the real one.
          startupProbe:
            exec:
              command: ["pg_isready", "--host=127.0.0.1", "--port=5432", "--username={{ $v.username }}", "--dbname={{ $v.database }}"]
            periodSeconds: 5
            timeoutSeconds: 5
            failureThreshold: 60
          readinessProbe:
            exec:
              command: ["pg_isready", "--host=127.0.0.1", "--port=5432", "--username={{ $v.username }}", "--dbname={{ $v.database }}"]
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 3
          livenessProbe:
            exec:
              command: ["pg_isready", "--host=127.0.0.1", "--port=5432", "--username={{ $v.username }}", "--dbname={{ $v.database }}"]
            periodSeconds: 20
            timeoutSeconds: 5
            failureThreshold: 6
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            runAsUser: 999
            runAsGroup: 999
            runAsNonRoot: true
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
            seccompProfile:
              type: RuntimeDefault
          volumeMounts:
            - name: data
              mountPath: /var/lib/postgresql/data
            # The root filesystem is read-only: the socket directory and /tmp are emptyDirs.
            - name: run
              mountPath: /var/run/postgresql
            - name: tmp
              mountPath: /tmp
            - name: initdb
              mountPath: /docker-entrypoint-initdb.d
              readOnly: true
      volumes:
        - name: run
          emptyDir:
            sizeLimit: 16Mi
        - name: tmp
          emptyDir:
            sizeLimit: 256Mi
        - name: initdb
          configMap:
            name: {{ .name }}-initdb
            defaultMode: 0444
  volumeClaimTemplates:
    - metadata:
        name: data
        labels:
          {{- $selector | nindent 10 }}
      spec:
        accessModes: ["ReadWriteOnce"]
        {{- with $v.persistence.storageClassName }}
        storageClassName: {{ . | quote }}
        {{- end }}
        resources:
          requests:
            storage: {{ $v.persistence.size | quote }}
{{- end }}

{{/*
An ingress-only NetworkPolicy: pods of `component` accept TCP `port` only from pods (same
namespace) labelled `allowed`.
Call with (dict "root" $ "name" "..." "component" "..." "port" 5432 "allowed" (dict ...)).
*/}}
{{- define "platform.networkPolicy" -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "platform.componentLabels" (dict "root" .root "component" .component) | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "platform.selectorLabels" (dict "root" .root "component" .component) | nindent 6 }}
  policyTypes:
    - Ingress
  ingress:
    - from:
        - podSelector:
            matchLabels:
              {{- toYaml .allowed | nindent 14 }}
      ports:
        - protocol: TCP
          port: {{ .port }}
{{- end }}
