"""The namespace's NetworkPolicies (charts/airflow-platform/templates/networkpolicies.yaml),
evaluated as a connectivity matrix.

Both charts are rendered by the real helm (the official one with values.yaml, whose own
NetworkPolicies stay off); the pods are their pod templates (Deployments, StatefulSets, Jobs)
plus the KubernetesExecutor's task pods (the chart's pod_template_file.yaml, with the step
labels this repo's pod overrides add), kube-dns, pods of another namespace, and addresses
outside the cluster's pods (the Kubernetes API, the internet, the cloud metadata endpoint).
tests/support/netpol.py decides every (source, destination, port) with Kubernetes'
NetworkPolicy semantics, and the result must be EXPECTED exactly: everything not listed is
denied. The evaluator itself is tested first, on hand-written policies.

The one stand-in: the cluster that `lookup` reads at install (Service and Endpoints
default/kubernetes) is a small fake Kubernetes API, since a unit test has no cluster.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from tests.support import pod_template
from tests.support.helm import REPO, Unavailable, helm_binary, render_official, render_platform, unavailable
from tests.support.kube import KUBERNETES_VERSION
from tests.support.netpol import Cluster, Endpoint, PolicyError, selector_matches

NAMESPACE = "airflow"
CHART = REPO / "charts" / "airflow-platform"
KIND_API = "172.18.0.2/32"  # what lookup finds on kind: the control-plane node
WITH_KIND_API = ("--set", f"networkPolicies.kubernetesApi.cidrs={{{KIND_API}}}")


# -- the evaluator on hand-written policies ---------------------------------------------------

def _policy(name, spec, namespace="ns"):
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


WEB = Endpoint("web", "10.0.0.1", "ns", {"app": "web", "tier": "front"}, {"http": ("TCP", 8080)})
DB = Endpoint("db", "10.0.0.2", "ns", {"app": "db"}, {"pg": ("TCP", 5432)})
BATCH = Endpoint("batch", "10.0.0.3", "ns", {"app": "batch"})
FOREIGN_WEB = Endpoint("foreign-web", "10.0.1.1", "other", {"app": "web", "tier": "front"})
OUTSIDE = Endpoint("outside", "203.0.113.7")
METADATA = Endpoint("metadata", "169.254.169.254")


def test_without_policies_everything_is_open():
    cluster = Cluster([])
    assert cluster.allows(WEB, DB, 5432) and cluster.allows(OUTSIDE, WEB, 1) and cluster.allows(DB, OUTSIDE, 443, "UDP")


def test_a_pod_unselected_in_a_direction_stays_open_in_it():
    # An ingress policy on db only: db's ingress is closed but to web; web's egress stays open.
    cluster = Cluster([_policy("db", {
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 5432}]}],
    })])
    assert cluster.allows(WEB, DB, 5432)
    assert not cluster.allows(BATCH, DB, 5432)
    assert not cluster.allows(WEB, DB, 5433)
    assert not cluster.allows(WEB, DB, 5432, "UDP")  # protocol defaults to TCP
    assert not cluster.allows(FOREIGN_WEB, DB, 5432)  # podSelector alone: the policy's namespace
    assert cluster.allows(DB, OUTSIDE, 443)  # no Egress type: egress open
    assert cluster.allows(WEB, BATCH, 9999)  # batch is selected by nothing


def test_default_deny_and_the_union_of_policies():
    deny = _policy("deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
    web_out = _policy("web-out", {
        "podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": "pg"}]}],
    })
    db_in = _policy("db-in", {
        "podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}}]}],
    })
    assert not Cluster([deny]).allows(WEB, DB, 5432)
    assert not Cluster([deny, web_out]).allows(WEB, DB, 5432)  # db's ingress still denies
    assert not Cluster([deny, db_in]).allows(WEB, DB, 5432)  # web's egress still denies
    both = Cluster([deny, web_out, db_in])
    assert both.allows(WEB, DB, 5432)
    assert not both.allows(WEB, DB, 5433)  # named port pg is 5432 on db
    assert not both.allows(BATCH, DB, 5432)
    assert not both.allows(DB, WEB, 8080)
    assert not both.allows(WEB, OUTSIDE, 443)
    assert both.allows(OUTSIDE, OUTSIDE, 443)  # not pods: not subject to NetworkPolicy


def test_namespace_selectors_ip_blocks_and_port_ranges():
    policy = _policy("mixed", {
        "podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"team": "a"}}, "podSelector": {"matchLabels": {"tier": "front"}}},
        ]}],
        "egress": [
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}],
             "ports": [{"port": 8000, "endPort": 8100}]},
            {"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "UDP", "port": 53}]},
        ],
    })
    cluster = Cluster([policy], namespace_labels={"other": {"team": "a"}})
    assert cluster.allows(FOREIGN_WEB, WEB, 1)  # namespace AND pod selector match
    assert not Cluster([policy]).allows(FOREIGN_WEB, WEB, 1)  # namespace not labelled team=a
    assert not cluster.allows(DB, WEB, 1)  # the policy's own namespace is not team=a
    assert cluster.egress_allows(WEB, OUTSIDE, 8050) and not cluster.egress_allows(WEB, OUTSIDE, 8101)
    assert not cluster.egress_allows(WEB, METADATA, 8050)  # the except
    assert cluster.egress_allows(WEB, FOREIGN_WEB, 53, "UDP")  # namespaceSelector {}: every namespace
    assert not cluster.egress_allows(WEB, OUTSIDE, 53, "UDP")  # selectors never match IPs


def test_an_empty_rule_list_and_an_empty_peer_list_differ():
    no_rules = _policy("none", {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": []})
    empty_peers = _policy("all", {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": []}]})
    assert not Cluster([no_rules]).allows(OUTSIDE, WEB, 80)
    assert Cluster([empty_peers]).allows(OUTSIDE, WEB, 80)


@pytest.mark.parametrize(
    "selector, labels, expected",
    [
        ({}, {}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
        ({"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]}, {"a": "1"}, False),
    ],
)
def test_label_selectors(selector, labels, expected):
    assert selector_matches(selector, labels) is expected


@pytest.mark.parametrize(
    "spec, complaint",
    [
        ({"policyTypes": ["Ingress"]}, "podSelector is required"),
        ({"podSelector": {}, "policyTypes": ["Inbound"]}, "Inbound"),
        ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Like", "values": ["x"]}]}}, "Like"),
        ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
         "ipBlock cannot be combined"),
        ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/8"]}}]}]},
         "not strictly inside"),
        ({"podSelector": {}, "ingress": [{"from": [{}]}]}, "empty peer"),
        ({"podSelector": {}, "ingress": [{"ports": [{"protocol": "ICMP"}]}]}, "ICMP"),
        ({"podSelector": {}, "ingress": [{"form": []}]}, "form"),
    ],
)
def test_evaluator_rejects_invalid_policies(spec, complaint):
    with pytest.raises(PolicyError, match=complaint):
        Cluster([_policy("bad", spec)])


# -- the rendered charts ----------------------------------------------------------------------

PROBES = [("UDP", 53), ("TCP", 53), ("TCP", 80), ("TCP", 443), ("TCP", 5432), ("TCP", 6443),
          ("TCP", 8080), ("TCP", 8793), ("TCP", 8794), ("TCP", 8974), ("TCP", 9000),
          ("UDP", 9125), ("TCP", 9102)]

AIRFLOW_COMPONENTS = ["scheduler", "api-server", "dag-processor", "triggerer", "run-airflow-migrations", "create-user-job"]
TASK_PODS = ["task", "extract-task", "process-task", "load-task"]
# The pods that run git-sync (a sidecar or an init container), checked against the renders.
GIT_SYNC_PODS = ["dag-processor", "triggerer", *TASK_PODS]
KUBERNETES_API_CLIENTS = ["scheduler", "api-server"]
# The object store's S3 API: staging (task pods) and task logs (written by the task pods and the
# triggerer, served by the API server). Not the scheduler nor the DAG processor.
OBJECT_STORE_CLIENTS = [*TASK_PODS, "api-server", "triggerer"]
# StatsD to the official chart's exporter (UDP 9125): every Airflow pod that emits metrics.
METRICS_EMITTERS = AIRFLOW_COMPONENTS + TASK_PODS
PROMETHEUS = Endpoint("prometheus", "10.244.3.2", "monitoring", {"app.kubernetes.io/name": "prometheus"})
MONITORING_PEERS = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]

# Every allowed (source, destination, "PROTOCOL/port") with the Kubernetes API's address set
# (as lookup finds it on a real install); anything else must be denied.
EXPECTED = {
    *{(pod, "kube-dns", probe) for pod in AIRFLOW_COMPONENTS + TASK_PODS for probe in ("UDP/53", "TCP/53")},
    *{(pod, "metadata-db", "TCP/5432") for pod in AIRFLOW_COMPONENTS},
    ("load-task", "warehouse", "TCP/5432"),
    *{(pod, "api-server", "TCP/8080") for pod in TASK_PODS},
    *{(pod, "git-server", "TCP/8080") for pod in GIT_SYNC_PODS},
    ("api-server", "triggerer", "TCP/8794"),
    *{(pod, "kubernetes-api", probe) for pod in KUBERNETES_API_CLIENTS for probe in ("TCP/443", "TCP/6443")},
    *{(pod, "object-store", "TCP/9000") for pod in OBJECT_STORE_CLIENTS},
    # The bucket Job resolves the store's name and creates the buckets.
    ("object-store-buckets", "kube-dns", "UDP/53"),
    ("object-store-buckets", "kube-dns", "TCP/53"),
    ("object-store-buckets", "object-store", "TCP/9000"),
    *{(pod, "statsd", "UDP/9125") for pod in METRICS_EMITTERS},
}
# Without an address for the Kubernetes API (`helm template`, nothing set), no pod reaches it.
EXPECTED_WITHOUT_API = {flow for flow in EXPECTED if flow[1] != "kubernetes-api"}

# Pairs the issue names, spelled out (they are also covered by the full matrix).
MUST_BE_DENIED = [
    *[(task, "metadata-db", "TCP/5432") for task in TASK_PODS],
    *[(task, "kubernetes-api", probe) for task in TASK_PODS for probe in ("TCP/443", "TCP/6443")],
    *[(task, "kubernetes-service", "TCP/443") for task in TASK_PODS],
    ("process-task", "warehouse", "TCP/5432"),
    ("extract-task", "warehouse", "TCP/5432"),
    ("task", "warehouse", "TCP/5432"),
    *[(pod, "internet", probe) for pod in AIRFLOW_COMPONENTS + TASK_PODS for probe in ("TCP/443", "TCP/80", "UDP/53")],
    *[(pod, "cloud-metadata", "TCP/80") for pod in AIRFLOW_COMPONENTS + TASK_PODS],
    *[(intruder, target, "TCP/8080") for intruder in ("other-namespace", "other-namespace-lookalike")
      for target in ("api-server", "scheduler", "git-server", "dag-processor")],
    *[(intruder, db, "TCP/5432") for intruder in ("other-namespace", "other-namespace-lookalike")
      for db in ("metadata-db", "warehouse")],
    ("other-namespace", "triggerer", "TCP/8794"),
    ("warehouse", "internet", "TCP/443"),
    ("git-server", "kube-dns", "UDP/53"),
    *[(pod, "object-store", "TCP/9000") for pod in ("scheduler", "dag-processor", "run-airflow-migrations",
                                                     "create-user-job", "warehouse", "git-server")],
    *[(intruder, "object-store", "TCP/9000") for intruder in ("other-namespace", "other-namespace-lookalike")],
    ("object-store", "internet", "TCP/443"),
    ("object-store", "kube-dns", "UDP/53"),
    ("object-store-buckets", "internet", "TCP/443"),
    ("object-store-buckets", "warehouse", "TCP/5432"),
    # The statsd exporter receives StatsD from the Airflow pods only, is scraped by no one by
    # default (networkPolicies.metrics.from), and reaches nothing.
    *[(intruder, "statsd", probe) for intruder in ("other-namespace", "other-namespace-lookalike")
      for probe in ("UDP/9125", "TCP/9102")],
    *[(pod, "statsd", "UDP/9125") for pod in ("warehouse", "metadata-db", "git-server", "object-store",
                                              "object-store-buckets")],
    *[(pod, "statsd", "TCP/9102") for pod in METRICS_EMITTERS],
    *[("statsd", target, probe) for target, probe in (
        ("kube-dns", "UDP/53"), ("kube-dns", "TCP/53"), ("internet", "TCP/443"), ("api-server", "TCP/8080"),
        ("metadata-db", "TCP/5432"), ("object-store", "TCP/9000"), ("kubernetes-api", "TCP/6443"),
        ("scheduler", "UDP/9125"))],
]


def _pod_templates(objects):
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield obj["spec"]["template"]


def _named_ports(spec):
    return {
        port["name"]: (port.get("protocol", "TCP"), port["containerPort"])
        for container in spec.get("containers", []) + spec.get("initContainers", [])
        for port in container.get("ports") or []
        if port.get("name")
    }


def _has_git_sync(spec) -> bool:
    return any("git-sync" in c["image"] for c in spec.get("containers", []) + spec.get("initContainers", []))


def _endpoints() -> tuple[dict[str, Endpoint], set[str]]:
    """Every endpoint of the matrix by name, and the names of those that run git-sync."""
    addresses = (f"10.244.0.{i}" for i in itertools.count(10))
    pods, git_sync = {}, set()
    for template in _pod_templates(render_official()):
        labels = template["metadata"]["labels"]
        name = labels["component"]
        pods[name] = Endpoint(name, next(addresses), NAMESPACE, labels, _named_ports(template["spec"]))
        if _has_git_sync(template["spec"]):
            git_sync.add(name)
    for template in _pod_templates(render_platform()):
        labels = template["metadata"]["labels"]
        name = labels["app.kubernetes.io/component"]
        pods[name] = Endpoint(name, next(addresses), NAMESPACE, labels, _named_ports(template["spec"]))
    task = pod_template.from_chart()
    for name, step in [("task", None), ("extract-task", "extract"), ("process-task", "process"), ("load-task", "load")]:
        labels = dict(task["metadata"]["labels"])
        if step:  # what src/category_pipeline/k8s.py adds to a step's pods
            labels |= {"airflow-platform.io/step": step, "airflow-platform.io/category": "books",
                       "app.kubernetes.io/part-of": "airflow-platform"}
        pods[name] = Endpoint(name, next(addresses), NAMESPACE, labels, _named_ports(task["spec"]))
        if _has_git_sync(task["spec"]):
            git_sync.add(name)
    load_labels = pods["load-task"].labels
    pods |= {
        "kube-dns": Endpoint("kube-dns", "10.244.0.2", "kube-system", {"k8s-app": "kube-dns"},
                             {"dns": ("UDP", 53), "dns-tcp": ("TCP", 53)}),
        "other-namespace": Endpoint("other-namespace", "10.244.1.2", "tenant-b", {"app": "whatever"}),
        # A pod elsewhere labelled like a load task pod: selectors must not reach out of the namespace.
        "other-namespace-lookalike": Endpoint("other-namespace-lookalike", "10.244.1.3", "tenant-b", load_labels),
        "kubernetes-api": Endpoint("kubernetes-api", KIND_API.split("/")[0]),
        "kubernetes-service": Endpoint("kubernetes-service", "10.96.0.1"),
        "internet": Endpoint("internet", "8.8.8.8"),
        "cloud-metadata": Endpoint("cloud-metadata", "169.254.169.254"),
    }
    return pods, git_sync


@pytest.fixture(scope="module")
def endpoints() -> dict[str, Endpoint]:
    return _endpoints()[0]


def _policies(*args) -> list[dict]:
    return [obj for obj in render_platform(*args) if obj["kind"] == "NetworkPolicy"]


def _matrix(cluster: Cluster, endpoints, decide="allows") -> set[tuple[str, str, str]]:
    check = getattr(cluster, decide)
    return {
        (source, destination, f"{protocol}/{port}")
        for (source, src), (destination, dst) in itertools.permutations(endpoints.items(), 2)
        for protocol, port in PROBES
        if check(src, dst, port, protocol)
    }


def _unexpected(actual, expected, endpoints) -> set:
    """Differences, ignoring flows whose both ends are outside the namespace (not ours)."""
    ours = {name for name, e in endpoints.items() if e.namespace == NAMESPACE}
    return {flow for flow in actual ^ expected if flow[0] in ours or flow[1] in ours}


def test_the_official_chart_renders_no_network_policy_of_its_own():
    assert not [obj["metadata"]["name"] for obj in render_official() if obj["kind"] == "NetworkPolicy"]


def test_the_matrix_covers_every_pod_of_both_charts(endpoints):
    pods = {name for name, e in endpoints.items() if e.namespace == NAMESPACE}
    assert pods == {*AIRFLOW_COMPONENTS, *TASK_PODS, "statsd", "warehouse", "metadata-db", "git-server",
                    "object-store", "object-store-buckets"}


def test_git_sync_runs_exactly_in_the_pods_the_matrix_expects():
    assert _endpoints()[1] == set(GIT_SYNC_PODS)


@pytest.mark.parametrize(
    "args, expected",
    [(WITH_KIND_API, EXPECTED), ((), EXPECTED_WITHOUT_API)],
    ids=["kubernetes-api-set", "defaults"],
)
def test_connectivity_matrix(endpoints, args, expected):
    actual = _matrix(Cluster(_policies(*args)), endpoints)
    differences = _unexpected(actual, expected, endpoints)
    assert not differences, "\n".join(
        f"{'ALLOWED, not expected' if flow in actual else 'DENIED, expected allowed'}: {flow}"
        for flow in sorted(differences)
    )


@pytest.mark.parametrize("flow", MUST_BE_DENIED, ids="->".join)
def test_named_pairs_are_denied(endpoints, flow):
    source, destination, probe = flow
    protocol, port = probe.split("/")
    cluster = Cluster(_policies(*WITH_KIND_API))
    assert not cluster.allows(endpoints[source], endpoints[destination], int(port), protocol)


def test_every_flow_in_the_namespace_is_allowed_at_both_ends(endpoints):
    """Inside the namespace, the clients' egress and the servers' ingress allow the same
    flows: no half of a flow is missing (it would be cut) or left over (it would open a
    direction for nothing)."""
    cluster = Cluster(_policies(*WITH_KIND_API))
    inside = {name: e for name, e in endpoints.items() if e.namespace == NAMESPACE}
    egress = _matrix(cluster, inside, "egress_allows")
    ingress = _matrix(cluster, inside, "ingress_allows")
    assert egress == ingress
    assert egress == {flow for flow in EXPECTED if flow[0] in inside and flow[1] in inside}


def test_selectors_do_not_depend_on_unrelated_labels(endpoints):
    """A task pod with any other labels (category, run id, dag id) is still a task pod, and one
    claiming another release is nobody's client."""
    cluster = Cluster(_policies(*WITH_KIND_API))
    load = endpoints["load-task"]
    relabelled = Endpoint("load-task-2", "10.244.0.99", NAMESPACE,
                          {**load.labels, "dag_id": "category_games", "run_id": "manual__x"})
    other_release = Endpoint("load-task-3", "10.244.0.98", NAMESPACE, {**load.labels, "release": "staging"})
    assert cluster.allows(relabelled, endpoints["warehouse"], 5432)
    assert not cluster.allows(other_release, endpoints["warehouse"], 5432)
    assert not cluster.allows(other_release, endpoints["kube-dns"], 53, "UDP")
    assert cluster.allows(relabelled, endpoints["statsd"], 9125, "UDP")
    assert not cluster.allows(other_release, endpoints["statsd"], 9125, "UDP")


def test_the_statsd_exporter_listens_where_the_policies_open(endpoints):
    """The ports the policies open are the exporter's own container ports (the chart's
    ports.statsdIngest and ports.statsdScrape)."""
    assert set(endpoints["statsd"].named_ports.values()) == {("UDP", 9125), ("TCP", 9102)}


# -- other values -----------------------------------------------------------------------------


def test_without_the_git_server_git_sync_reaches_only_the_external_git_host(endpoints):
    github = Endpoint("github", "140.82.121.3")
    policies = _policies("--set", "gitServer.enabled=false",
                         "--set", "networkPolicies.externalGit.cidrs={140.82.112.0/20}")
    assert "platform-git" not in {p["metadata"]["name"] for p in policies}
    cluster = Cluster(policies)
    for pod in GIT_SYNC_PODS:
        assert cluster.allows(endpoints[pod], github, 443), pod
        assert not cluster.allows(endpoints[pod], github, 22), pod
        assert not cluster.allows(endpoints[pod], endpoints["internet"], 443), pod
    for pod in ("scheduler", "api-server", "run-airflow-migrations"):
        assert not cluster.allows(endpoints[pod], github, 443), pod
    # Without an address git-sync reaches nothing (and the render is still valid).
    assert not Cluster(_policies("--set", "gitServer.enabled=false")).allows(endpoints["triggerer"], github, 443)


def test_without_the_metadata_database_the_components_reach_the_external_one(endpoints):
    database = Endpoint("rds", "10.20.30.40")
    policies = _policies("--set", "metadataDatabase.enabled=false",
                         "--set", "networkPolicies.externalMetadataDatabase.cidrs={10.20.30.40/32}")
    assert "platform-metadata-db" not in {p["metadata"]["name"] for p in policies}
    cluster = Cluster(policies)
    for pod in AIRFLOW_COMPONENTS:
        assert cluster.allows(endpoints[pod], database, 5432), pod
    for pod in TASK_PODS:
        assert not cluster.allows(endpoints[pod], database, 5432), pod
    assert not Cluster(_policies("--set", "metadataDatabase.enabled=false")).allows(endpoints["scheduler"], database, 5432)


def test_without_the_dev_object_store_its_clients_reach_only_the_external_one(endpoints):
    s3_endpoint = Endpoint("s3-vpc-endpoint", "10.30.0.7")
    external = ("--set", "objectStore.enabled=false,objectStore.credentials.source=none")
    policies = _policies(*external, "--set", "networkPolicies.externalObjectStore.cidrs={10.30.0.0/24}")
    names = {p["metadata"]["name"] for p in policies}
    assert "platform-object-store" not in names and "platform-object-store-buckets" not in names
    cluster = Cluster(policies)
    for pod in OBJECT_STORE_CLIENTS:
        assert cluster.allows(endpoints[pod], s3_endpoint, 443), pod
        assert not cluster.allows(endpoints[pod], s3_endpoint, 80), pod
        assert not cluster.allows(endpoints[pod], endpoints["internet"], 443), pod
    for pod in ("scheduler", "dag-processor", "run-airflow-migrations"):
        assert not cluster.allows(endpoints[pod], s3_endpoint, 443), pod
    # Without an address the clients reach no store (and the render is still valid).
    assert not Cluster(_policies(*external)).allows(endpoints["task"], s3_endpoint, 443)


def test_the_cloud_metadata_endpoint_is_excepted_even_from_the_whole_internet(endpoints):
    policies = _policies("--set", "gitServer.enabled=false", "--set", "networkPolicies.externalGit.cidrs={0.0.0.0/0}",
                         "--set", "networkPolicies.externalGit.ports={80,443}")
    cluster = Cluster(policies)
    assert cluster.allows(endpoints["triggerer"], endpoints["internet"], 443)
    assert not cluster.allows(endpoints["triggerer"], endpoints["cloud-metadata"], 80)
    assert not cluster.allows(endpoints["triggerer"], endpoints["cloud-metadata"], 443)


@pytest.mark.parametrize("cidr", ["169.254.169.254/32", "169.254.169.254/31"])
def test_a_block_around_the_metadata_endpoint_gets_it_excepted_or_fails(cidr, endpoints):
    args = ("--set", f"networkPolicies.kubernetesApi.cidrs={{{cidr}}}")
    if cidr.endswith("/32"):
        with pytest.raises(subprocess.CalledProcessError) as failure:
            render_platform(*args)
        assert f"{cidr} is the cloud metadata endpoint" in failure.value.stderr
    else:
        cluster = Cluster(_policies(*args))
        assert not cluster.allows(endpoints["scheduler"], endpoints["cloud-metadata"], 443)
        assert cluster.allows(endpoints["scheduler"], Endpoint("neighbour", "169.254.169.255"), 443)


def test_ui_ingress_comes_only_from_the_configured_peers(endpoints):
    ingress_nginx = Endpoint("ingress-nginx", "10.244.2.2", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    opened = Cluster(_policies("--set-json", f"networkPolicies.ui.from={json.dumps(peers)}"))
    assert opened.allows(ingress_nginx, endpoints["api-server"], 8080)
    assert not opened.allows(ingress_nginx, endpoints["api-server"], 8793)
    assert not opened.allows(ingress_nginx, endpoints["scheduler"], 8080)
    assert not opened.allows(endpoints["other-namespace"], endpoints["api-server"], 8080)
    assert not Cluster(_policies()).allows(ingress_nginx, endpoints["api-server"], 8080)


def test_metrics_scrapes_come_only_from_the_configured_peers(endpoints):
    opened = Cluster(_policies("--set-json", f"networkPolicies.metrics.from={json.dumps(MONITORING_PEERS)}"))
    assert opened.allows(PROMETHEUS, endpoints["statsd"], 9102)
    assert not opened.allows(PROMETHEUS, endpoints["statsd"], 9125, "UDP")
    for pod in ("scheduler", "api-server", "task", "warehouse"):
        assert not opened.allows(PROMETHEUS, endpoints[pod], 9102), pod
    assert not opened.allows(endpoints["other-namespace"], endpoints["statsd"], 9102)
    # Opening the scrape port adds nothing else: the rest of the matrix is the default one.
    assert _matrix(opened, endpoints) == _matrix(Cluster(_policies()), endpoints)
    assert not Cluster(_policies()).allows(PROMETHEUS, endpoints["statsd"], 9102)


def test_dns_peers_follow_the_values(endpoints):
    node_local_dns = Endpoint("node-local-dns", "169.254.20.10")
    peers = [{"ipBlock": {"cidr": "169.254.20.10/32"}}]
    cluster = Cluster(_policies("--set-json", f"networkPolicies.dns.peers={json.dumps(peers)}"))
    assert cluster.allows(endpoints["scheduler"], node_local_dns, 53, "UDP")
    assert not cluster.allows(endpoints["scheduler"], endpoints["kube-dns"], 53, "UDP")


@pytest.mark.parametrize(
    "setting, complaint",
    [
        ("networkPolicies.kubernetesApi.cidrs={10.0.0.1}", "/networkPolicies/kubernetesApi/cidrs/0"),
        ("networkPolicies.externalGit.ports={0}", "/networkPolicies/externalGit/ports/0"),
        ("warehouse.networkPolicy.clients.matchLabels.release=other", "/warehouse/networkPolicy/clients"),
        ("networkPolicies.airflowRelease=Airflow", "/networkPolicies/airflowRelease"),
        # An emptied selector would admit every pod of the Airflow release.
        ("warehouse.networkPolicy.clients.matchLabels=null", "/warehouse/networkPolicy/clients"),
        ("gitServer.networkPolicy.clients=null", "missing property 'clients'"),
    ],
)
def test_bad_values_are_rejected_by_name(setting, complaint):
    with pytest.raises(subprocess.CalledProcessError) as failure:
        render_platform("--set", setting)
    assert complaint in failure.value.stderr


@pytest.mark.parametrize("key", ["ui", "metrics"])
def test_a_catch_all_peer_needs_an_explicit_selector(key):
    with pytest.raises(subprocess.CalledProcessError) as failure:
        render_platform("--set-json", f'networkPolicies.{key}.from=[{{"ipBlock":{{"cidr":"10.0.0.0/8"}},"podSelector":{{}}}}]')
    assert f"/networkPolicies/{key}/from/0" in failure.value.stderr


VARIANTS = [
    (),
    WITH_KIND_API,
    ("--set", "gitServer.enabled=false,metadataDatabase.enabled=false"),
    ("--set", "gitServer.enabled=false,metadataDatabase.enabled=false",
     "--set", "networkPolicies.externalGit.cidrs={0.0.0.0/0,::/0}",
     "--set", "networkPolicies.externalMetadataDatabase.cidrs={10.1.0.0/16}",
     "--set", "objectStore.enabled=false,objectStore.credentials.source=none",
     "--set", "networkPolicies.externalObjectStore.cidrs={10.30.0.0/24}",
     "--set-json", 'networkPolicies.ui.from=[{"ipBlock":{"cidr":"10.0.0.0/8"}}]',
     "--set-json", f"networkPolicies.metrics.from={json.dumps(MONITORING_PEERS)}"),
]


@pytest.mark.parametrize("args", VARIANTS, ids=["defaults", "api-set", "servers-off", "external"])
def test_every_policy_validates_strictly_against_kubernetes(args):
    try:
        import kubernetes_validate
    except ImportError:
        unavailable("kubernetes-validate is not installed (pip install kubernetes-validate==1.37.0)")
    policies = _policies(*args)
    assert policies
    for policy in policies:
        kubernetes_validate.validate(policy, KUBERNETES_VERSION, strict=True)
    Cluster(policies)  # and the evaluator reads them all


def test_networkpolicies_off_renders_none():
    assert not _policies("--set", "networkPolicies.enabled=false")


# -- the Kubernetes API's address: lookup at install, NOTES.txt when unknown -------------------


def _isolated_helm(*args, kubeconfig, tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(kubeconfig),
           "HELM_CACHE_HOME": str(tmp_path / "cache"), "HELM_CONFIG_HOME": str(tmp_path / "config"),
           "HELM_DATA_HOME": str(tmp_path / "data")}
    try:
        binary = helm_binary()
    except Unavailable as exc:
        unavailable(str(exc))
    return subprocess.run([binary, *args], capture_output=True, text=True, env=env, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_notes_warn_when_the_kubernetes_api_address_is_unknown(tmp_path):
    def notes(*args):
        result = _isolated_helm("install", "platform", str(CHART), "--namespace", NAMESPACE, "--dry-run=client", *args,
                                kubeconfig=tmp_path / "none", tmp_path=tmp_path)
        assert result.returncode == 0, result.stderr
        return result.stdout.split("NOTES:", 1)[1]

    assert "networkPolicies.kubernetesApi.cidrs" in notes()
    assert "WARNING" not in notes(*WITH_KIND_API)
    assert "WARNING" not in notes("--set", "networkPolicies.enabled=false")


class _FakeKubernetes(BaseHTTPRequestHandler):
    """Just enough of a kind cluster's API for `helm template --dry-run=server`: discovery of
    the kinds the chart renders, Service and Endpoints default/kubernetes, 404 otherwise."""

    CLUSTER_SCOPED = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ClusterRole",
                      "ClusterRoleBinding", "Namespace"}
    OBJECTS = {
        "/api/v1/namespaces/default/services/kubernetes": {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]},
        },
        "/api/v1/namespaces/default/endpoints/kubernetes": {
            "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "kubernetes", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "172.18.0.2"}], "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}],
        },
    }

    @classmethod
    def _plural(cls, kind):
        lower = kind.lower()
        return lower if lower.endswith("s") else lower[:-1] + "ies" if lower.endswith("y") else lower + "s"

    def _discovery(self):
        kinds = {}
        for group_version, kind in self.server.kinds:
            kinds.setdefault(group_version, set()).add(kind)
        documents = {
            "/version": {"major": "1", "minor": "34", "gitVersion": "v1.34.0", "platform": "linux/amd64"},
            "/api": {"kind": "APIVersions", "versions": ["v1"],
                     "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]},
        }
        groups = sorted(gv for gv in kinds if "/" in gv)
        documents["/apis"] = {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": gv.split("/")[0], "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
             "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]}} for gv in groups]}
        for group_version, names in kinds.items():
            path = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
            documents[path] = {"kind": "APIResourceList", "groupVersion": group_version, "resources": [
                {"name": self._plural(kind), "singularName": kind.lower(), "kind": kind,
                 "namespaced": kind not in self.CLUSTER_SCOPED, "verbs": ["create", "delete", "get", "list", "patch", "update"]}
                for kind in sorted(names)]}
        return documents

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        self.server.requests.append(path)
        body = self._discovery().get(path) or self.OBJECTS.get(path)
        code = 200 if body else 404
        data = json.dumps(body or {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                   "code": 404}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_install_looks_up_the_kubernetes_api_addresses(tmp_path):
    kinds = {(obj["apiVersion"], obj["kind"]) for obj in render_platform()} | {("v1", "Service"), ("v1", "Endpoints")}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeKubernetes)
    server.kinds, server.requests = kinds, []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "fake", "user": {"token": "fake"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": NAMESPACE}}],
    }))
    try:
        result = _isolated_helm("template", "platform", str(CHART), "--namespace", NAMESPACE, "--dry-run=server",
                                "--disable-openapi-validation", "--show-only", "templates/networkpolicies.yaml",
                                kubeconfig=kubeconfig, tmp_path=tmp_path)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert result.returncode == 0, result.stderr
    assert "/api/v1/namespaces/default/endpoints/kubernetes" in server.requests
    (policy,) = [doc for doc in yaml.safe_load_all(result.stdout)
                 if doc and doc["metadata"]["name"] == "platform-kubernetes-api"]
    (rule,) = policy["spec"]["egress"]
    assert rule["to"] == [{"ipBlock": {"cidr": "10.96.0.1/32"}}, {"ipBlock": {"cidr": "172.18.0.2/32"}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]
    scheduler = Endpoint("scheduler", "10.244.0.5", NAMESPACE, {"tier": "airflow", "release": "airflow", "component": "scheduler"})
    task = Endpoint("task", "10.244.0.6", NAMESPACE, {"tier": "airflow", "release": "airflow", "component": "worker"})
    cluster = Cluster([policy, *_policies()])
    assert cluster.allows(scheduler, Endpoint("service", "10.96.0.1"), 443)
    assert cluster.allows(scheduler, Endpoint("control-plane", "172.18.0.2"), 6443)
    assert not cluster.allows(task, Endpoint("control-plane", "172.18.0.2"), 6443)
