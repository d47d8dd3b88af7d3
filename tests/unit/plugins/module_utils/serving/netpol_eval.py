"""A small evaluator of Kubernetes NetworkPolicy ingress semantics (networking.k8s.io/v1).

Enough of the API's rules to judge rendered policies against a set of pods, written
from the API reference, not from the code under test:

- a policy applies to the pods of its own namespace that its ``podSelector`` selects
  (``{}`` selects all of them), for ingress when ``policyTypes`` holds ``Ingress``
  (absent ``policyTypes``: ``Ingress`` always);
- a pod no ingress policy selects accepts everything; a selected pod accepts a
  connection when at least one rule of at least one selecting policy admits it
  (policies and rules are additive, never subtractive);
- a rule admits when its ``ports`` match (absent or empty: every port; an entry without
  ``port`` matches every port of its protocol, ``protocol`` defaults to TCP, ``endPort``
  makes a range, a named port is looked up in the destination's container ports) and
  its ``from`` matches (absent or empty: every source);
- a peer with only ``podSelector`` matches pods of the policy's namespace; with only
  ``namespaceSelector`` every pod of the selected namespaces; with both, the selected
  pods of the selected namespaces; ``ipBlock`` is not modelled (it raises).

Selectors support ``matchLabels`` and ``matchExpressions`` (In, NotIn, Exists,
DoesNotExist). Every namespace carries ``kubernetes.io/metadata.name`` as the API server
sets it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict = field(default_factory=dict, hash=False, compare=False)
    ports: dict = field(default_factory=dict, hash=False, compare=False)  # name -> number


def selects(selector: dict | None, labels: dict) -> bool:
    """Whether a label selector matches ``labels`` (``{}`` matches everything)."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown selector operator {op!r}")
    return True


def _namespace_labels(namespaces: dict, name: str) -> dict:
    return {**namespaces.get(name, {}), "kubernetes.io/metadata.name": name}


def _peer_admits(peer: dict, policy_ns: str, source: Pod, namespaces: dict) -> bool:
    if "ipBlock" in peer:
        raise NotImplementedError("ipBlock peers are not modelled")
    has_pod, has_ns = "podSelector" in peer, "namespaceSelector" in peer
    if not has_pod and not has_ns:
        raise ValueError(f"a peer needs a selector: {peer!r}")
    if has_ns:
        if not selects(peer["namespaceSelector"], _namespace_labels(namespaces,
                                                                    source.namespace)):
            return False
    elif source.namespace != policy_ns:
        return False
    return not has_pod or selects(peer["podSelector"], source.labels)


def _port_admits(entries: list | None, port: int, protocol: str, dest: Pod) -> bool:
    if not entries:
        return True
    for entry in entries:
        if entry.get("protocol", "TCP") != protocol:
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str) and not wanted.isdigit():
            wanted = dest.ports.get(wanted)
            if wanted is None:
                continue
        low = int(wanted)
        if low <= port <= int(entry.get("endPort", low)):
            return True
    return False


def _selecting(policies: list[dict], dest: Pod) -> list[dict]:
    out = []
    for policy in policies:
        if policy["metadata"]["namespace"] != dest.namespace:
            continue
        spec = policy["spec"]
        if "Ingress" not in spec.get("policyTypes", ["Ingress"]):
            continue
        if selects(spec.get("podSelector"), dest.labels):
            out.append(policy)
    return out


def admits(policies: list[dict], source: Pod, dest: Pod, port: int,
           protocol: str = "TCP", namespaces: dict | None = None) -> bool:
    """Whether ``source`` may open ``port``/``protocol`` on ``dest`` under ``policies``."""
    namespaces = namespaces or {}
    selecting = _selecting(policies, dest)
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            if not _port_admits(rule.get("ports"), port, protocol, dest):
                continue
            peers = rule.get("from")
            if not peers or any(_peer_admits(p, policy["metadata"]["namespace"], source,
                                             namespaces) for p in peers):
                return True
    return False
