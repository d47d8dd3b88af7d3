# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""A new API key reaches the serving pods: the RayClusters whose heads hold another roll.

The launcher reads the key once, when it starts vLLM, and KubeRay does not replace a
RayCluster's pods when its pod template changes. So the SHA-256 of the key (never the
key) is an annotation of the head's pod template (``render.API_KEY_SHA256_ANNOTATION``),
which KubeRay copies onto the head pod, and each run compares it with the running heads:

- a head annotated with another digest serves an old key: its cluster rolls;
- a head without the annotation (started before it was recorded) serves an unknown key:
  its cluster rolls only when this run rewrote the Secret;
- a cluster without a live head does not roll (KubeRay makes the head from the new
  template).

Rolling a cluster deletes all its pods, head and workers (the workers' Ray belongs to
the head's GCS), and, when waiting, waits until pods with new uids are Ready, every
worker joined, before the next cluster: with several replicas the others keep serving.
A pod that cannot start ends that wait with its reason (``pods.PodFaults``). Check mode
deletes nothing; the caller reports what would roll.

API
---
``key_sha256(key) -> str``
``stale_clusters(client, namespace, instance, clusters, sha256, secret_changed) -> dict``
    the clusters (of ``clusters``, in order) whose running head holds another key, each
    with the digest that head holds (None where not recorded).
``roll(client, namespace, cluster, want_workers, timeout, progress=None, wait=True)``
    deletes the cluster's pods and (``wait``) waits for their successors.
"""

from __future__ import annotations

import hashlib

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.wait import (
    WaitStatus,
    wait_for,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.pods import PodFaults
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.render import (
    API_KEY_SHA256_ANNOTATION,
)


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _live(pods: list[dict]) -> list[dict]:
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")
            and (p.get("status") or {}).get("phase") not in ("Failed", "Succeeded")]


def _node_type(pod: dict) -> str | None:
    return (pod["metadata"].get("labels") or {}).get("ray.io/node-type")


def _ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _pods(client, namespace: str, cluster: str) -> list[dict]:
    return client.list("v1", "Pod", namespace, label_selector=f"ray.io/cluster={cluster}")


def stale_clusters(client, namespace: str, instance: str, clusters: list[str],
                   sha256: str | None, secret_changed: bool) -> dict:
    """``{cluster: digest its head holds (None: not recorded)}`` for the clusters whose
    live head holds another key than ``sha256``, in the order of ``clusters``."""
    selector = f"app.kubernetes.io/instance={instance}"
    if not sha256 or not client.list("ray.io/v1", "RayCluster", namespace,
                                     label_selector=selector):
        return {}  # a first run: no pod can hold an old key
    pods = _live(client.list("v1", "Pod", namespace, label_selector=selector))
    stale = {}
    for cluster in clusters:
        for head in pods:
            if _node_type(head) != "head" or (head["metadata"].get("labels") or {}).get(
                    "ray.io/cluster") != cluster:
                continue
            held = (head["metadata"].get("annotations") or {}).get(API_KEY_SHA256_ANNOTATION)
            if (held is None and secret_changed) or (held is not None and held != sha256):
                stale[cluster] = held
                break
    return stale


def roll(client, namespace: str, cluster: str, want_workers: int, timeout: float,
         progress=None, wait: bool = True) -> None:
    """Replace every pod of ``cluster``; with ``wait``, until the new ones are Ready."""
    old = {p["metadata"]["uid"] for p in _pods(client, namespace, cluster)
           if p["metadata"].get("uid")}
    for pod in _live(_pods(client, namespace, cluster)):
        client.delete("v1", "Pod", pod["metadata"]["name"], namespace, check_mode=False)
    if not wait:
        return
    faults = PodFaults()
    what = f"the new pods of {namespace}/{cluster} (API key rotation)"

    def _check() -> WaitStatus:
        new = [p for p in _live(_pods(client, namespace, cluster))
               if p["metadata"].get("uid") not in old]
        faults.check(new, what)
        head = [p for p in new if _node_type(p) == "head" and _ready(p)]
        workers = sum(1 for p in new if _node_type(p) == "worker" and _ready(p))
        ready = (["head"] if head else []) + [f"worker-{i}" for i in range(min(
            workers, want_workers))]
        status = WaitStatus.of(["head", *(f"worker-{i}" for i in range(want_workers))],
                               ready, "new pods ready")
        line = (f"{cluster}: rolling for the new API key, {len(status.present)} of "
                f"{1 + want_workers} new pods ready")
        return WaitStatus(done=status.done, present=status.present, missing=status.missing,
                          progress=line)

    wait_for(_check, timeout=timeout, what=what, interval=2.0, backoff=1.2,
             max_interval=10.0, progress=progress, progress_every=15.0)
