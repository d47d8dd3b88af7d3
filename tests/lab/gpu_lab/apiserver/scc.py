"""OpenShift's pod admission: service account, priority class, SecurityContextConstraints.

A new pod's service account and priority class must exist (the class's value becomes
``spec.priority``). Its pod is then checked against the SCCs its
service account may use (everyone: ``restricted-v2``; others through the SCC's ``users``
/ ``groups`` or a (Cluster)RoleBinding to ``system:openshift:scc:<name>``), highest
priority first. The first SCC that admits the pod mutates it as OpenShift does (UID from
the namespace's range, capabilities dropped, no privilege escalation, RuntimeDefault
seccomp) and is named in the ``openshift.io/scc`` annotation; if none admits it the
create is refused with 403 and each provider's reasons, as the real server words them.
"""

from __future__ import annotations

from typing import Any

from .errors import ApiError
from .store import Store

_RESTRICTED = ("restricted-v2", "restricted", "nonroot-v2", "nonroot")


def _uid_range(store: Store, namespace: str) -> tuple[int, int]:
    ns = store.get(("", "namespaces"), "", namespace) or {}
    annotation = (ns.get("metadata", {}).get("annotations") or {}).get(
        "openshift.io/sa.scc.uid-range", "1000680000/10000")
    start, _sep, size = annotation.partition("/")
    return int(start), int(start) + int(size or 10000) - 1


def _usable(store: Store, scc: dict[str, Any], namespace: str, sa: str) -> bool:
    name = scc["metadata"]["name"]
    user = f"system:serviceaccount:{namespace}:{sa}"
    groups = {"system:authenticated", "system:serviceaccounts",
              f"system:serviceaccounts:{namespace}"}
    if user in (scc.get("users") or []) or groups & set(scc.get("groups") or []):
        return True
    role = f"system:openshift:scc:{name}"
    bindings = store.list(("rbac.authorization.k8s.io", "rolebindings"), namespace) + \
        store.list(("rbac.authorization.k8s.io", "clusterrolebindings"))
    for binding in bindings:
        if (binding.get("roleRef") or {}).get("name") != role:
            continue
        for subject in binding.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount" and subject.get("name") == sa and (
                    subject.get("namespace", namespace) == namespace):
                return True
            if subject.get("kind") == "Group" and subject.get("name") in groups:
                return True
    return False


def _problems(scc: dict[str, Any], pod: dict[str, Any], uids: tuple[int, int]) -> list[str]:
    spec = pod["spec"]
    out = []
    for flag, field in (("hostNetwork", "allowHostNetwork"), ("hostPID", "allowHostPID"),
                        ("hostIPC", "allowHostIPC")):
        if spec.get(flag) and not scc.get(field):
            out.append(f"spec.securityContext.{flag}: Invalid value: true: {flag} is not allowed "
                       "to be used")
    for i, volume in enumerate(spec.get("volumes") or []):
        if "hostPath" in volume and not scc.get("allowHostDirVolumePlugin"):
            out.append(f"spec.volumes[{i}]: Invalid value: \"hostPath\": hostPath volumes are "
                       "not allowed to be used")
    rule = (scc.get("runAsUser") or {}).get("type", "RunAsAny")
    pod_uid = (spec.get("securityContext") or {}).get("runAsUser")
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind) or []):
            ctx = c.get("securityContext") or {}
            where = f"spec.{kind}[{i}].securityContext"
            if ctx.get("privileged") and not scc.get("allowPrivilegedContainer"):
                out.append(f"{where}.privileged: Invalid value: true: Privileged containers "
                           "are not allowed")
            if ctx.get("allowPrivilegeEscalation") and scc.get("allowPrivilegeEscalation") is \
                    False:
                out.append(f"{where}.allowPrivilegeEscalation: Invalid value: true: Allowing "
                           "privilege escalation for containers is not allowed")
            allowed = set(scc.get("allowedCapabilities") or [])
            for cap in (ctx.get("capabilities") or {}).get("add") or []:
                if "*" not in allowed and cap not in allowed:
                    out.append(f"{where}.capabilities.add: Invalid value: \"{cap}\": capability "
                               "may not be added")
            uid = ctx.get("runAsUser", pod_uid)
            if uid is not None and rule == "MustRunAsRange" and not uids[0] <= uid <= uids[1]:
                out.append(f"{where}.runAsUser: Invalid value: {uid}: must be in the ranges: "
                           f"[{uids[0]}, {uids[1]}]")
            elif uid == 0 and rule == "MustRunAsNonRoot":
                out.append(f"{where}.runAsUser: Invalid value: 0: running with the root UID is "
                           "forbidden")
    return out


def _mutate(scc: dict[str, Any], pod: dict[str, Any], uids: tuple[int, int]) -> None:
    name = scc["metadata"]["name"]
    pod["metadata"].setdefault("annotations", {})["openshift.io/scc"] = name
    if name not in _RESTRICTED:
        return
    spec = pod["spec"]
    pod_ctx = spec.setdefault("securityContext", {})
    pod_ctx.setdefault("seccompProfile", {"type": "RuntimeDefault"})
    if (scc.get("runAsUser") or {}).get("type") == "MustRunAsRange":
        pod_ctx.setdefault("fsGroup", uids[0])
    for kind in ("initContainers", "containers"):
        for c in spec.get(kind) or []:
            ctx = c.setdefault("securityContext", {})
            ctx.setdefault("allowPrivilegeEscalation", False)
            ctx.setdefault("runAsNonRoot", True)
            caps = ctx.setdefault("capabilities", {})
            caps.setdefault("drop", ["ALL"])
            if (scc.get("runAsUser") or {}).get("type") == "MustRunAsRange" and \
                    "runAsUser" not in pod_ctx:
                ctx.setdefault("runAsUser", uids[0])


def admit_pod(store: Store, pod: dict[str, Any]) -> None:
    """Check a new pod's service account and SCCs; mutate it or raise 403."""
    meta, spec = pod["metadata"], pod["spec"]
    namespace, name = meta["namespace"], meta.get("name", "")
    sa = spec.get("serviceAccountName") or "default"
    if sa != "default" and store.get(("", "serviceaccounts"), namespace, sa) is None:
        raise ApiError(403, "Forbidden", f'pods "{name}" is forbidden: error looking up service '
                       f'account {namespace}/{sa}: serviceaccount "{sa}" not found',
                       {"name": name, "kind": "pods"})
    class_name = spec.get("priorityClassName")
    if class_name:
        found = store.get(("scheduling.k8s.io", "priorityclasses"), "", class_name)
        if found is None:
            raise ApiError(403, "Forbidden", f'pods "{name}" is forbidden: no PriorityClass with '
                           f"name {class_name} was found", {"name": name, "kind": "pods"})
        spec["priority"] = found.get("value", 0)
        spec.setdefault("preemptionPolicy", found.get("preemptionPolicy",
                                                      "PreemptLowerPriority"))
    sccs = store.list(("security.openshift.io", "securitycontextconstraints"))
    if not sccs:
        return
    uids = _uid_range(store, namespace)
    ordered = sorted(sccs, key=lambda s: (-(s.get("priority") or 0), s["metadata"]["name"]))
    reasons = []
    for scc in ordered:
        provider = scc["metadata"]["name"]
        if not _usable(store, scc, namespace, sa):
            reasons.append(f'provider "{provider}": Forbidden: not usable by user or '
                           "serviceaccount")
            continue
        problems = _problems(scc, pod, uids)
        if not problems:
            _mutate(scc, pod, uids)
            return
        reasons.extend(f'provider "{provider}": {p}' for p in problems)
    raise ApiError(403, "Forbidden", f'pods "{name}" is forbidden: unable to validate against '
                   f"any security context constraint: [{', '.join(reasons)}]",
                   {"name": name, "kind": "pods"})
