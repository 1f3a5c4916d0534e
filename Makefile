# Every workflow of the platform is a target here; `make help` lists them.
#
#   make run [DATE=YYYY-MM-DD]   the main job on a laptop (SQLite, no cluster)
#   make test                    the test suite (what CI runs, via .ci/run)

PYTHON ?= python3
VENV ?= .venv
# Extra arguments for pytest, e.g. make test ARGS="-k loader -x"
ARGS ?=

# The official chart's values schema, shipped beside the repo in ../shared (as in CI).
CHART_SCHEMA := $(wildcard $(CURDIR)/../shared/airflow-chart/values.schema.json)
ifneq ($(CHART_SCHEMA),)
export AIRFLOW_CHART_SCHEMA ?= $(abspath $(CHART_SCHEMA))
endif

VENV_BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
# local_run and the tests start the `airflow` CLI by name: use the venv's.
WITH_VENV := PATH="$(VENV_BIN):$$PATH" VIRTUAL_ENV="$(abspath $(VENV))"
PIP := $(VENV_BIN)/python -m pip --disable-pip-version-check

.DEFAULT_GOAL := help
.PHONY: help venv run airflow backfill test test-kind bench clean distclean \
	tools helm-tools cluster image load chart-pull deploy dags-push ui trigger down up

help: ## List the targets
	@echo "Usage: make TARGET [DATE=YYYY-MM-DD] [PYTHON=python3.11] [VENV=.venv] [ARGS=...] [NAMESPACE=airflow] [PROFILE=kind]"
	@echo
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  %-11s %s\n", $$1, $$2}'

venv: $(STAMP) ## Create the venv (VENV=.venv): requirements.lock + this package; reinstalls only when they change

$(VENV_BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
		echo "error: PYTHON=$(PYTHON) is missing or older than 3.11; run make PYTHON=/path/to/python3.11" >&2; \
		exit 1; }
	$(PYTHON) -m venv $(VENV)

# Reinstalls only when the lock or pyproject.toml changed since the last install.
$(STAMP): requirements.lock pyproject.toml | $(VENV_BIN)/python
	$(PIP) install -q -r requirements.lock
	$(PIP) install -q --no-deps -e .
	@touch $@

# WAREHOUSE=postgresql://user:password@host:5432/db loads into that warehouse instead of the
# laptop's SQLite file (exported to the run, never echoed).
ifneq ($(WAREHOUSE),)
run: export AIRFLOW_CONN_WAREHOUSE_DEFAULT := $(WAREHOUSE)
endif
run: venv ## Main job: all category DAGs + advanced_data_pipeline for DATE (default yesterday) on SQLite (WAREHOUSE=postgresql://...: there; STAGING=s3: staging on a loopback S3 API); prints a summary
	$(WITH_VENV) $(VENV_BIN)/python -m category_pipeline.local_run run $(if $(DATE),--date $(DATE)) $(if $(STAGING),--staging $(STAGING))

# make airflow: the UI, the API and task execution on PORT; listening on HOST (127.0.0.1: this
# machine only; HOST=0.0.0.0 for every interface).
PORT ?= 8080
HOST ?= 127.0.0.1
airflow: venv ## Airflow standalone on the laptop state in .local/ (UI on http://127.0.0.1:PORT, PORT=8080 HOST=127.0.0.1; Ctrl-C, SIGTERM or SIGHUP stops it all)
	$(WITH_VENV) $(VENV_BIN)/python -m category_pipeline.local_run standalone --port $(PORT) --host $(HOST)

test: venv ## Test suite without a cluster (PostgreSQL tests start their own throwaway server)
	$(WITH_VENV) $(VENV_BIN)/python -m pytest -m "not kind" $(ARGS)

# Stops with a one-line reason and a non-zero exit where it cannot run (no Docker engine, no
# internet); it installs helm, kubectl and kind itself. REUSE_CLUSTER=1 reuses a cluster kept
# by an earlier KEEP_CLUSTER=1 run; otherwise the suite's cluster is always new.
test-kind: venv ## The kind integration suite: the platform on a fresh kind cluster (needs Docker and internet)
	@$(VENV_BIN)/python -m tests.kind.preflight
	$(WITH_VENV) $(WITH_TOOLS) AIRFLOW_CHART_PULL=1 $(VENV_BIN)/python -m pytest -m kind tests/kind $(ARGS)

bench: venv chart-pull $(VENV)/.bench-installed ## Benchmarks (bench/): parse, process vs peers, staging, load vs ADBC, laptop, categories, k8s cost, image; writes BENCHMARKS.md (QUICK=1: under 3 min)
	$(WITH_VENV) $(WITH_TOOLS) AIRFLOW_CHART_DIR=$(AIRFLOW_CHART_DIR) $(VENV_BIN)/python bench/run.py $(if $(QUICK),--quick)

$(VENV)/.bench-installed: bench/requirements.txt requirements.lock | $(STAMP)
	$(PIP) install -q -r bench/requirements.txt -c requirements.lock
	@touch $@

# Airflow 3's backfill of one category over order dates FROM..TO (both included): on the
# laptop's state (.local/, run by `make airflow`'s scheduler if that is up, else by one started
# for it), or TARGET=cluster on the deployed platform (POST /api/v2/backfills). Safe to rerun.
backfill: venv ## Backfill CATEGORY over FROM..TO (YYYY-MM-DD): progress, then orders rows per day (TARGET=cluster: the deployed platform)
	@{ test -n "$(FROM)" && test -n "$(TO)"; } || { echo "error: make backfill needs FROM=YYYY-MM-DD TO=YYYY-MM-DD (CATEGORY=$(CATEGORY))" >&2; exit 2; }
ifeq ($(TARGET),cluster)
	$(PLATFORM_API) backfill $(CATEGORY) --from $(FROM) --to $(TO)
else
	$(WITH_VENV) $(VENV_BIN)/python -m category_pipeline.backfill $(CATEGORY) --from $(FROM) --to $(TO)
endif

clean: ## Remove the laptop state in .local/ (Airflow home, SQLite warehouse, staging); keeps the venv
	rm -rf .local

distclean: clean ## clean, and remove the venv too
	rm -rf $(VENV)

# --- Kubernetes: the platform on a cluster (kind for development) --------------------------
KIND_CLUSTER ?= airflow-platform
# Every piece follows it: both releases, dags-push, ui, trigger (nothing names a namespace).
NAMESPACE ?= airflow
# Values profile: "" (the defaults, for a real cluster) or kind (values-kind.yaml over values.yaml
# and charts/airflow-platform/values-kind.yaml: small requests for a 2-CPU Docker VM).
PROFILE ?=
IMAGE_REPO ?= airflow-platform
IMAGE_TAG ?= 0.1.0
IMAGE := $(IMAGE_REPO):$(IMAGE_TAG)
# The official Apache Airflow chart, pinned: the one version `make deploy` installs and the
# tests render (tests/support/helm.py reads it from here).
AIRFLOW_CHART_VERSION ?= 1.22.0
AIRFLOW_CHART_REPO ?= https://airflow.apache.org
AIRFLOW_CHART_DIR ?= $(CURDIR)/.tools/charts/airflow-$(AIRFLOW_CHART_VERSION)/airflow
TOOLS_BIN := $(CURDIR)/.tools/bin
WITH_TOOLS := PATH="$(TOOLS_BIN):$$PATH"
HELM := $(WITH_TOOLS) helm
KUBECTL := $(WITH_TOOLS) kubectl -n $(NAMESPACE)
CATEGORY ?= electronics
PROFILE_VALUES := $(if $(PROFILE),-f values-$(PROFILE).yaml)
PLATFORM_PROFILE_VALUES := $(if $(PROFILE),-f charts/airflow-platform/values-$(PROFILE).yaml)
PLATFORM_API := $(WITH_TOOLS) NAMESPACE=$(NAMESPACE) python3 scripts/platform_api.py

tools: ## Put helm, kubectl and kind for this OS/arch into .tools/bin where they are not on PATH
	scripts/install-tools.sh --with-kind

helm-tools:
	@scripts/install-tools.sh >/dev/null

cluster: tools ## Create the kind cluster KIND_CLUSTER from kind-config.yaml (no-op if it exists)
	@$(WITH_TOOLS) kind get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)' \
		|| $(WITH_TOOLS) kind create cluster --name $(KIND_CLUSTER) --config kind-config.yaml --wait 180s

image: ## Build the platform image IMAGE_REPO:IMAGE_TAG from images/Dockerfile
	scripts/build-image.sh $(IMAGE)

load: ## Load the platform image into the kind cluster
	$(WITH_TOOLS) kind load docker-image $(IMAGE) --name $(KIND_CLUSTER)

chart-pull: helm-tools ## Download the official Airflow chart AIRFLOW_CHART_VERSION into .tools/charts
	@test -f $(AIRFLOW_CHART_DIR)/Chart.yaml || { mkdir -p $(dir $(AIRFLOW_CHART_DIR)) && \
		$(HELM) pull airflow --repo $(AIRFLOW_CHART_REPO) --version $(AIRFLOW_CHART_VERSION) \
			--untar --untardir $(dir $(AIRFLOW_CHART_DIR)); }
	@echo "official chart: $(AIRFLOW_CHART_DIR)"

# The platform release is installed without --wait: its claims (pipeline-staging,
# airflow-logs) are mounted only by pods of the other release, and under a
# WaitForFirstConsumer StorageClass (kind's, most clouds') they stay Pending until then,
# which helm's wait counts as not ready. Its workloads are waited for by name instead.
# Pod Security Admission enforces the "restricted" profile on the namespace: no pod in it, a
# DAG's pod_override included, may run privileged, as root, on the host's namespaces or volumes.
POD_SECURITY_LABELS := pod-security.kubernetes.io/enforce=restricted pod-security.kubernetes.io/enforce-version=latest \
	pod-security.kubernetes.io/audit=restricted pod-security.kubernetes.io/warn=restricted

deploy: chart-pull ## Install/upgrade charts/airflow-platform, seed the git server, then the official chart with values.yaml (PROFILE=kind: small requests)
	@test -z "$(PROFILE)" || test -f values-$(PROFILE).yaml || { echo "error: PROFILE=$(PROFILE): no values-$(PROFILE).yaml" >&2; exit 1; }
	$(KUBECTL) get namespace $(NAMESPACE) >/dev/null 2>&1 || $(KUBECTL) create namespace $(NAMESPACE)
	$(KUBECTL) label namespace $(NAMESPACE) --overwrite $(POD_SECURITY_LABELS)
	$(HELM) upgrade --install platform charts/airflow-platform --namespace $(NAMESPACE) --create-namespace \
		$(PLATFORM_PROFILE_VALUES) --set gitServer.image.repository=$(IMAGE_REPO),gitServer.image.tag=$(IMAGE_TAG)
	workloads="$$($(KUBECTL) get statefulsets,deployments -l app.kubernetes.io/instance=platform -o name)" \
		&& test -n "$$workloads" && for workload in $$workloads; do \
		$(KUBECTL) rollout status "$$workload" --timeout 10m || exit 1; done
	@# git-sync starts from the repository: give the in-cluster one its first DAGs.
	NAMESPACE=$(NAMESPACE) $(WITH_TOOLS) scripts/dags-push.sh --if-empty
	$(HELM) upgrade --install airflow $(AIRFLOW_CHART_DIR) --namespace $(NAMESPACE) -f values.yaml $(PROFILE_VALUES) \
		--set images.airflow.repository=$(IMAGE_REPO),images.airflow.tag=$(IMAGE_TAG) --wait --timeout 15m

dags-push: ## Push dags/ (and categories.yaml) to the in-cluster git server; git-sync picks it up
	NAMESPACE=$(NAMESPACE) $(WITH_TOOLS) scripts/dags-push.sh

ui: ## Port-forward the Airflow UI/API server to http://localhost:8080 and print the login
	@echo "Airflow UI: http://localhost:8080  user: admin  password: $$($(PLATFORM_API) password)"
	$(KUBECTL) port-forward svc/airflow-api-server 8080:8080

trigger: ## Unpause and trigger category_$(CATEGORY) through the REST API, wait for it (CATEGORY=..., DATE=...)
	$(PLATFORM_API) trigger $(CATEGORY) $(if $(DATE),--date $(DATE)) --wait

down: ## Delete the kind cluster
	$(WITH_TOOLS) kind delete cluster --name $(KIND_CLUSTER)

up: ## Everything on kind, PROFILE=kind: cluster, image, load, deploy (then `make ui`, `make trigger`)
	$(MAKE) cluster
	$(MAKE) image
	$(MAKE) load
	$(MAKE) deploy PROFILE=$(or $(PROFILE),kind)
