# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""A new API key or a new image reaches the serving pods: the RayClusters whose live pods
differ from what this run renders roll.

KubeRay does not replace a RayCluster's pods when its pod template changes, and the
launcher reads the key once, when it starts vLLM. So each run compares the live pods
with what it renders, and a cluster rolls when:

- its head holds another API key: the SHA-256 of the key (never the key) is an
  annotation of the head's pod template (``render.API_KEY_SHA256_ANNOTATION``), which
  KubeRay copies onto the head pod. A head annotated with another digest serves an old
  key; a head without the annotation (started before it was recorded) serves an unknown
  key and rolls only when this run rewrote the Secret;
- any live pod runs another image than the rendered template of its group (the head's,
  or its worker group's by ``ray.io/group``), compared per container name, init
  containers included; containers the template does not name (injected by KubeRay or a
  webhook) are not compared. This covers an upgrade and the fix after a pod stuck in
  ImagePullBackOff.

A cluster without live pods does not roll (KubeRay makes them from the new template).
Rolling a cluster deletes all its pods, head and workers (the workers' Ray belongs to
the head's GCS), and, when waiting, waits until pods with new uids are Ready, every
worker joined, before the next cluster: with several replicas the others keep serving.
A pod that cannot start ends that wait with its reason (``pods.PodFaults``). Check mode
deletes nothing; the caller reports what would roll.

API
---
``key_sha256(key) -> str``
``stale_clusters(client, namespace, instance, clusters, sha256, secret_changed) -> dict``
    ``clusters``: this run's rendered RayClusters. Those (in order) that must roll, each
    with ``{"before": {...}, "after": {...}}`` naming what differs: ``api_key_sha256``
    (``"(not recorded)"`` where the head has none) and/or ``images``
    (``{"<group>/<container>": image}``, the group ``head`` or the worker group's name).
``roll(client, namespace, cluster, want_workers, timeout, progress=None, wait=True,
why="a new API key")``
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


def _images(spec: dict) -> dict:
    """container name -> image, of a pod (template)'s spec, init containers included."""
    return {c["name"]: c.get("image") for key in ("initContainers", "containers")
            for c in (spec or {}).get(key) or [] if c.get("name")}


def _desired_images(raycluster: dict) -> dict:
    """group (``head`` or the worker group's name) -> container name -> image."""
    spec = raycluster["spec"]
    want = {"head": _images(spec["headGroupSpec"]["template"].get("spec"))}
    for group in spec.get("workerGroupSpecs") or []:
        want[group["groupName"]] = _images(group["template"].get("spec"))
    return want


def _group(pod: dict) -> str | None:
    if _node_type(pod) == "head":
        return "head"
    return (pod["metadata"].get("labels") or {}).get("ray.io/group")


def _image_drift(mine: list[dict], want: dict) -> dict:
    """``{"<group>/<container>": (running images, wanted image)}`` where a live pod of
    ``mine`` runs another image than its group's template."""
    drift: dict = {}
    for pod in mine:
        wanted = want.get(_group(pod))
        if wanted is None:  # not a group of this run's template: not ours to judge
            continue
        for name, image in _images(pod.get("spec")).items():
            if name in wanted and image != wanted[name]:
                held, _want = drift.setdefault(f"{_group(pod)}/{name}", (set(), wanted[name]))
                held.add(image)
    return drift


def _key_drift(mine: list[dict], sha256: str | None, secret_changed: bool):
    """The digest the live head holds when it serves another key than ``sha256``
    (``"(not recorded)"``); None when it serves this one or there is no head."""
    if not sha256:
        return None
    for head in mine:
        if _node_type(head) != "head":
            continue
        held = (head["metadata"].get("annotations") or {}).get(API_KEY_SHA256_ANNOTATION)
        if held is None and secret_changed:
            return "(not recorded)"
        if held is not None and held != sha256:
            return held
    return None


def stale_clusters(client, namespace: str, instance: str, clusters: list[dict],
                   sha256: str | None, secret_changed: bool) -> dict:
    """``{cluster: {"before": {...}, "after": {...}}}`` for the rendered RayClusters of
    ``clusters`` whose live pods hold another API key or run another image, in order."""
    selector = f"app.kubernetes.io/instance={instance}"
    if not client.list("ray.io/v1", "RayCluster", namespace, label_selector=selector):
        return {}  # a first run: no pod of ours runs yet
    pods = _live(client.list("v1", "Pod", namespace, label_selector=selector))
    stale = {}
    for raycluster in clusters:
        name = raycluster["metadata"]["name"]
        mine = [p for p in pods
                if (p["metadata"].get("labels") or {}).get("ray.io/cluster") == name]
        before, after = {}, {}
        held = _key_drift(mine, sha256, secret_changed)
        if held is not None:
            before["api_key_sha256"], after["api_key_sha256"] = held, sha256
        drift = _image_drift(mine, _desired_images(raycluster))
        if drift:
            before["images"] = {k: ", ".join(sorted(map(str, held_images)))
                                for k, (held_images, _want) in sorted(drift.items())}
            after["images"] = {k: want for k, (_held, want) in sorted(drift.items())}
        if before:
            stale[name] = {"before": before, "after": after}
    return stale


def roll(client, namespace: str, cluster: str, want_workers: int, timeout: float,
         progress=None, wait: bool = True, why: str = "a new API key") -> None:
    """Replace every pod of ``cluster``; with ``wait``, until the new ones are Ready.
    ``why`` (what changed, never a key) goes into the wait's messages."""
    old = {p["metadata"]["uid"] for p in _pods(client, namespace, cluster)
           if p["metadata"].get("uid")}
    for pod in _live(_pods(client, namespace, cluster)):
        client.delete("v1", "Pod", pod["metadata"]["name"], namespace, check_mode=False)
    if not wait:
        return
    faults = PodFaults()
    what = f"the new pods of {namespace}/{cluster} (rolled for {why})"

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
        line = (f"{cluster}: rolling for {why}, {len(status.present)} of "
                f"{1 + want_workers} new pods ready")
        return WaitStatus(done=status.done, present=status.present, missing=status.missing,
                          progress=line)

    wait_for(_check, timeout=timeout, what=what, interval=2.0, backoff=1.2,
             max_interval=10.0, progress=progress, progress_every=15.0)
