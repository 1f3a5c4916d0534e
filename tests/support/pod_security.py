"""A checker of the Kubernetes Pod Security Standards, profile "restricted" (which includes
"baseline"), as the Pod Security admission controller applies them from Kubernetes 1.30 on:
https://kubernetes.io/docs/concepts/security/pod-security-standards/

It reads rendered manifests (Pods, and the Pod templates of Deployments, StatefulSets,
DaemonSets, ReplicaSets, Jobs and CronJobs) and returns every violation, so that a test can
show them all at once instead of the first one a cluster would refuse.

Like the admission controller, it judges each field where it is set: an explicit bad value
fails wherever it is (a pod-level `runAsUser: 0` fails even when every container overrides
it), and where a rule needs a value (seccomp, runAsNonRoot), a container that leaves the field
unset takes the pod-level one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

# Kinds whose Pod template is at spec.template (CronJob: spec.jobTemplate.spec.template).
TEMPLATE_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job")
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")

ALLOWED_VOLUME_SOURCES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
ALLOWED_ADDED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",  # 1.27+
    "net.ipv4.tcp_keepalive_time",  # 1.29+
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
})
ALLOWED_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
ALLOWED_SECCOMP_TYPES = frozenset({"RuntimeDefault", "Localhost"})
ALLOWED_APPARMOR_TYPES = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")

# The rule names a Violation carries, one per control of the standard.
RULES = (
    "hostProcess", "hostNamespaces", "privileged", "capabilities", "volumeTypes", "hostPorts",
    "appArmor", "seLinux", "procMount", "seccomp", "sysctls", "allowPrivilegeEscalation",
    "runAsNonRoot", "runAsUser", "hostProbes",
)


@dataclass(frozen=True)
class Violation:
    workload: str  # Kind/name of the manifest, e.g. Deployment/airflow-scheduler
    container: str | None  # None: a pod-level field
    rule: str  # one of RULES
    detail: str

    def __str__(self) -> str:
        where = f"container {self.container}" if self.container else "pod"
        return f"{self.workload} {where}: {self.rule}: {self.detail}"


def pod_templates(manifests: list[dict]) -> dict[str, dict]:
    """Kind/name -> the Pod (template) of every workload among ``manifests``: a dict with
    ``metadata`` and ``spec``. Other kinds are ignored."""
    found = {}
    for doc in manifests:
        kind = doc.get("kind")
        name = f"{kind}/{doc.get('metadata', {}).get('name')}"
        if kind == "Pod":
            template = doc
        elif kind in TEMPLATE_KINDS:
            template = (doc.get("spec") or {}).get("template")
        elif kind == "CronJob":
            template = (((doc.get("spec") or {}).get("jobTemplate") or {}).get("spec") or {}).get("template")
        else:
            continue
        if not isinstance(template, dict) or not isinstance(template.get("spec"), dict):
            raise ValueError(f"{name}: no Pod spec where a {kind} has one")
        found[name] = template
    return found


def check_manifests(manifests: list[dict]) -> list[Violation]:
    """Every violation of "restricted" in the Pod templates of ``manifests``."""
    return [v for workload, pod in pod_templates(manifests).items() for v in check_pod(workload, pod)]


def check_pod(workload: str, pod: dict) -> list[Violation]:
    """Every violation of "restricted" in one Pod (or Pod template): ``workload`` names it."""
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        raise ValueError(f"{workload}: the Pod has no spec")
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    pod_sc = spec.get("securityContext") or {}
    containers = list(_containers(workload, spec))
    if not containers:
        raise ValueError(f"{workload}: the Pod has no containers")
    violations: list[Violation] = []

    def bad(container: str | None, rule: str, detail: str) -> None:
        violations.append(Violation(workload, container, rule, detail))

    # --- pod-level fields
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        bad(None, "hostProcess", "securityContext.windowsOptions.hostProcess is true")
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            bad(None, "hostNamespaces", f"{field} is true")
    for volume in spec.get("volumes") or []:
        sources = set(volume) - {"name"}
        if not sources <= ALLOWED_VOLUME_SOURCES:
            bad(None, "volumeTypes", f"volume {volume.get('name')} is of type {', '.join(sorted(sources - ALLOWED_VOLUME_SOURCES))}")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            bad(None, "sysctls", f"sysctl {sysctl.get('name')} is not in the safe set")
    _check_selinux(pod_sc, lambda detail: bad(None, "seLinux", detail))
    apparmor = (pod_sc.get("appArmorProfile") or {}).get("type")
    if apparmor is not None and apparmor not in ALLOWED_APPARMOR_TYPES:
        bad(None, "appArmor", f"securityContext.appArmorProfile.type is {apparmor}")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in ALLOWED_SECCOMP_TYPES:
        bad(None, "seccomp", f"securityContext.seccompProfile.type is {pod_seccomp} (RuntimeDefault or Localhost)")
    pod_non_root = pod_sc.get("runAsNonRoot")
    if pod_non_root is False:
        bad(None, "runAsNonRoot", "securityContext.runAsNonRoot is false")
    if pod_sc.get("runAsUser") == 0:
        bad(None, "runAsUser", "securityContext.runAsUser is 0 (root)")
    for key, value in annotations.items():
        if key.startswith(APPARMOR_ANNOTATION) and not (value == "runtime/default" or str(value).startswith("localhost/")):
            bad(key[len(APPARMOR_ANNOTATION):], "appArmor", f"annotation {key} is {value}")

    # --- container-level fields
    for name, container in containers:
        sc = container.get("securityContext") or {}

        def bad_here(rule: str, detail: str) -> None:
            bad(name, rule, detail)

        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            bad_here("hostProcess", "securityContext.windowsOptions.hostProcess is true")
        if sc.get("privileged"):
            bad_here("privileged", "securityContext.privileged is true")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            bad_here("capabilities", "securityContext.capabilities.drop does not include ALL")
        added = set(capabilities.get("add") or []) - ALLOWED_ADDED_CAPABILITIES
        if added:
            bad_here("capabilities", f"securityContext.capabilities.add has {', '.join(sorted(added))} (only NET_BIND_SERVICE)")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                bad_here("hostPorts", f"port {port.get('containerPort')} has hostPort {port['hostPort']}")
        apparmor = (sc.get("appArmorProfile") or {}).get("type")
        if apparmor is not None and apparmor not in ALLOWED_APPARMOR_TYPES:
            bad_here("appArmor", f"securityContext.appArmorProfile.type is {apparmor}")
        _check_selinux(sc, lambda detail: bad_here("seLinux", detail))
        if sc.get("procMount") not in (None, "Default"):
            bad_here("procMount", f"securityContext.procMount is {sc['procMount']}")
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp is not None and seccomp not in ALLOWED_SECCOMP_TYPES:
            bad_here("seccomp", f"securityContext.seccompProfile.type is {seccomp} (RuntimeDefault or Localhost)")
        elif seccomp is None and pod_seccomp is None:
            bad_here("seccomp", "no seccompProfile, neither on the container nor on the pod")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad_here("allowPrivilegeEscalation", "securityContext.allowPrivilegeEscalation is not false")
        non_root = sc.get("runAsNonRoot")
        if non_root is False:
            bad_here("runAsNonRoot", "securityContext.runAsNonRoot is false")
        elif non_root is None and pod_non_root is not True:
            bad_here("runAsNonRoot", "runAsNonRoot is true neither on the container nor on the pod")
        if sc.get("runAsUser") == 0:
            bad_here("runAsUser", "securityContext.runAsUser is 0 (root)")
        for where, handler in _handlers(container):
            for action in ("httpGet", "tcpSocket"):
                if (handler.get(action) or {}).get("host"):
                    bad_here("hostProbes", f"{where}.{action}.host is {handler[action]['host']}")
    return violations


def _containers(workload: str, spec: dict) -> Iterator[tuple[str, dict]]:
    for field in CONTAINER_LISTS:
        for container in spec.get(field) or []:
            if not isinstance(container, dict) or not container.get("name"):
                raise ValueError(f"{workload}: an entry of {field} has no name")
            yield container["name"], container


def _check_selinux(security_context: dict, bad) -> None:
    options = security_context.get("seLinuxOptions") or {}
    if options.get("type", "") not in ALLOWED_SELINUX_TYPES:
        bad(f"securityContext.seLinuxOptions.type is {options['type']}")
    for field in ("user", "role"):
        if options.get(field):
            bad(f"securityContext.seLinuxOptions.{field} is set ({options[field]})")


def _handlers(container: dict) -> Iterator[tuple[str, dict]]:
    """Probes and lifecycle hooks: their host field must stay unset (baseline, 1.34+)."""
    for probe in PROBES:
        if container.get(probe):
            yield probe, container[probe]
    for hook, handler in (container.get("lifecycle") or {}).items():
        if isinstance(handler, dict):
            yield f"lifecycle.{hook}", handler
