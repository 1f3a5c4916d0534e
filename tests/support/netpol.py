"""A small evaluator of Kubernetes NetworkPolicy (networking.k8s.io/v1) semantics, so that
tests can check rendered policies as a connectivity matrix without a cluster.

What it models (kubernetes.io/docs/concepts/services-networking/network-policies/):
- a policy applies to the pods of its own namespace that its podSelector selects ({}: all);
- policyTypes as written; when absent: Ingress, plus Egress if the policy has egress rules;
- a pod that no policy of a direction selects is open in that direction; a selected pod
  allows a connection in that direction iff one rule of one of those policies allows it
  (policies only add up, they never subtract);
- a connection happens iff the source's egress AND the destination's ingress allow it;
- peers: podSelector alone (pods of the policy's namespace), namespaceSelector alone (every
  pod of the matching namespaces), both (pods matching both), ipBlock (cidr minus except);
  a rule without `from`/`to` (or with an empty list) admits every peer, one without `ports`
  (or with an empty list) every port;
- ports: protocol (default TCP), a number or a named port (resolved against the destination
  pod's container ports), endPort ranges;
- label selectors: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist).

What it leaves out: traffic from the pod's own node (always allowed: kubelet probes),
Services (callers pass the destination after the Service's DNAT, the pod or endpoint IP and
target port, which is what CNIs evaluate) and hostNetwork pods. Whether an ipBlock matches
pod IPs is implementation-defined; here it does (the more permissive reading, so that a
denied pair is denied under either reading).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Mapping

INGRESS, EGRESS = "Ingress", "Egress"
PROTOCOLS = {"TCP", "UDP", "SCTP"}
OPERATORS = {"In", "NotIn", "Exists", "DoesNotExist"}


class PolicyError(ValueError):
    """A NetworkPolicy the API server would reject, or one this evaluator cannot read."""


@dataclass(frozen=True, eq=False)
class Endpoint:
    """One end of a connection: a pod (namespace set) or an address outside the cluster's
    pods (namespace None: a node, the Kubernetes API's endpoint, the internet)."""

    name: str
    ip: str
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    # Container port names → (protocol, number), for policies that name ports.
    named_ports: Mapping[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def is_pod(self) -> bool:
        return self.namespace is not None


def selector_matches(selector: Mapping | None, labels: Mapping[str, str], where: str = "selector") -> bool:
    """A metav1.LabelSelector against a label set. {} matches everything."""
    if selector is None:
        raise PolicyError(f"{where}: null selector")
    unknown = set(selector) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise PolicyError(f"{where}: unknown field(s) {sorted(unknown)}")
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != str(value):
            return False
    for expression in selector.get("matchExpressions") or []:
        if not _expression_matches(expression, labels, where):
            return False
    return True


def _expression_matches(expression: Mapping, labels: Mapping[str, str], where: str) -> bool:
    key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values") or []
    if not key:
        raise PolicyError(f"{where}: matchExpression without a key: {expression}")
    if operator not in OPERATORS:
        raise PolicyError(f"{where}: matchExpression operator {operator!r} (one of {sorted(OPERATORS)})")
    if operator in ("In", "NotIn") and not values:
        raise PolicyError(f"{where}: operator {operator} on {key!r} needs values")
    if operator in ("Exists", "DoesNotExist") and values:
        raise PolicyError(f"{where}: operator {operator} on {key!r} takes no values")
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        # As in Kubernetes: a pod without the key is "not in" the set.
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    return key not in labels


class _Policy:
    """One NetworkPolicy document, checked on construction."""

    def __init__(self, doc: Mapping):
        if doc.get("kind") != "NetworkPolicy":
            raise PolicyError(f"not a NetworkPolicy: {doc.get('kind')!r}")
        metadata = doc.get("metadata") or {}
        self.name = metadata.get("name", "?")
        self.namespace = metadata.get("namespace")
        if not self.namespace:
            raise PolicyError(f"NetworkPolicy {self.name}: no metadata.namespace")
        spec = doc.get("spec") or {}
        unknown = set(spec) - {"podSelector", "policyTypes", "ingress", "egress"}
        if unknown:
            raise PolicyError(f"NetworkPolicy {self.name}: unknown spec field(s) {sorted(unknown)}")
        if "podSelector" not in spec:
            raise PolicyError(f"NetworkPolicy {self.name}: spec.podSelector is required")
        self.pod_selector = spec["podSelector"]
        selector_matches(self.pod_selector, {}, f"{self.name}.podSelector")  # validates it
        types = spec.get("policyTypes")
        if types is None:
            types = [INGRESS] + ([EGRESS] if spec.get("egress") else [])
        bad = set(types) - {INGRESS, EGRESS}
        if bad:
            raise PolicyError(f"NetworkPolicy {self.name}: policyTypes {sorted(bad)}")
        self.types = set(types)
        self.rules = {
            INGRESS: [_Rule(rule, "from", f"{self.name}.ingress[{i}]") for i, rule in enumerate(spec.get("ingress") or [])],
            EGRESS: [_Rule(rule, "to", f"{self.name}.egress[{i}]") for i, rule in enumerate(spec.get("egress") or [])],
        }

    def selects(self, pod: Endpoint) -> bool:
        return pod.namespace == self.namespace and selector_matches(self.pod_selector, pod.labels)


class _Rule:
    def __init__(self, rule: Mapping, peers_key: str, where: str):
        unknown = set(rule) - {peers_key, "ports"}
        if unknown:
            raise PolicyError(f"{where}: unknown field(s) {sorted(unknown)}")
        self.where = where
        self.peers = rule.get(peers_key) or []  # absent or []: every peer
        self.ports = rule.get("ports") or []  # absent or []: every port
        for i, peer in enumerate(self.peers):
            _check_peer(peer, f"{where}.{peers_key}[{i}]")
        for i, port in enumerate(self.ports):
            _check_port(port, f"{where}.ports[{i}]")

    def admits(self, policy: _Policy, peer: Endpoint, destination: Endpoint, protocol: str, port: int,
               namespace_labels) -> bool:
        peer_ok = not self.peers or any(_peer_matches(p, policy, peer, namespace_labels) for p in self.peers)
        port_ok = not self.ports or any(_port_matches(p, destination, protocol, port) for p in self.ports)
        return peer_ok and port_ok


def _check_peer(peer: Mapping, where: str) -> None:
    unknown = set(peer) - {"podSelector", "namespaceSelector", "ipBlock"}
    if unknown:
        raise PolicyError(f"{where}: unknown field(s) {sorted(unknown)}")
    if not peer:
        raise PolicyError(f"{where}: an empty peer (it must set podSelector, namespaceSelector or ipBlock)")
    if "ipBlock" in peer:
        if len(peer) > 1:
            raise PolicyError(f"{where}: ipBlock cannot be combined with a selector")
        block = peer["ipBlock"]
        try:
            network = ipaddress.ip_network(block["cidr"], strict=False)
            for excepted in block.get("except") or []:
                inner = ipaddress.ip_network(excepted, strict=False)
                if inner.version != network.version or not inner.subnet_of(network) or inner == network:
                    raise PolicyError(f"{where}: except {excepted} is not strictly inside {block['cidr']}")
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, PolicyError):
                raise
            raise PolicyError(f"{where}: bad ipBlock {block}: {exc}") from exc
    for key in ("podSelector", "namespaceSelector"):
        if key in peer:
            selector_matches(peer[key], {}, f"{where}.{key}")


def _check_port(port: Mapping, where: str) -> None:
    unknown = set(port) - {"protocol", "port", "endPort"}
    if unknown:
        raise PolicyError(f"{where}: unknown field(s) {sorted(unknown)}")
    if port.get("protocol", "TCP") not in PROTOCOLS:
        raise PolicyError(f"{where}: protocol {port.get('protocol')!r} (one of {sorted(PROTOCOLS)})")
    number = port.get("port")
    if isinstance(number, int) and not 1 <= number <= 65535:
        raise PolicyError(f"{where}: port {number} out of 1-65535")
    if "endPort" in port:
        if not isinstance(number, int):
            raise PolicyError(f"{where}: endPort needs a numeric port")
        if not number <= port["endPort"] <= 65535:
            raise PolicyError(f"{where}: endPort {port['endPort']} below port {number} or above 65535")


def _peer_matches(peer: Mapping, policy: _Policy, other: Endpoint, namespace_labels) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        network = ipaddress.ip_network(block["cidr"], strict=False)
        if address.version != network.version or address not in network:
            return False
        return not any(address in ipaddress.ip_network(e, strict=False) for e in block.get("except") or [])
    if not other.is_pod:
        return False  # selectors select pods only
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], namespace_labels(other.namespace)):
            return False
    elif other.namespace != policy.namespace:
        return False  # a podSelector alone means the policy's own namespace
    return selector_matches(peer.get("podSelector", {}), other.labels)


def _port_matches(rule_port: Mapping, destination: Endpoint, protocol: str, port: int) -> bool:
    rule_protocol = rule_port.get("protocol", "TCP")
    if rule_protocol != protocol:
        return False
    number = rule_port.get("port")
    if number is None:
        return True  # every port of that protocol
    if isinstance(number, str):
        named = destination.named_ports.get(number)
        return named is not None and named == (protocol, port)
    return number <= port <= rule_port.get("endPort", number)


class Cluster:
    """A set of NetworkPolicies (of any namespaces) and the labels of namespaces."""

    def __init__(self, policies: Iterable[Mapping], namespace_labels: Mapping[str, Mapping[str, str]] | None = None):
        self.policies = [_Policy(doc) for doc in policies]
        self._namespace_labels = dict(namespace_labels or {})

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        # Every namespace carries kubernetes.io/metadata.name (set by the API server).
        return {**self._namespace_labels.get(namespace, {}), "kubernetes.io/metadata.name": namespace}

    def _direction_allows(self, direction: str, subject: Endpoint, peer: Endpoint, destination: Endpoint,
                          protocol: str, port: int) -> bool:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol {protocol!r} (one of {sorted(PROTOCOLS)})")
        if not subject.is_pod:
            return True  # nothing outside the pods is subject to NetworkPolicy
        selecting = [p for p in self.policies if direction in p.types and p.selects(subject)]
        if not selecting:
            return True
        return any(
            rule.admits(policy, peer, destination, protocol, port, self.namespace_labels)
            for policy in selecting
            for rule in policy.rules[direction]
        )

    def egress_allows(self, source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP") -> bool:
        return self._direction_allows(EGRESS, source, destination, destination, protocol, port)

    def ingress_allows(self, source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP") -> bool:
        return self._direction_allows(INGRESS, destination, source, destination, protocol, port)

    def allows(self, source: Endpoint, destination: Endpoint, port: int, protocol: str = "TCP") -> bool:
        return self.egress_allows(source, destination, port, protocol) and self.ingress_allows(
            source, destination, port, protocol
        )
