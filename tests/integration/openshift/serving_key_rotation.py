"""Rotating the API key of the lab's served stack (real Ray, real vLLM on CPU) rolls its
pods: the new key works through the Route, the old one gets 401, a rerun changes nothing.

Called by test_serving_stage.py with its module fixture ``served``, so the rotation costs
one roll of the running stack, not a second lab and a second start-up. Independent reads:
the Secret, the pods' uids and annotations from the lab API server, requests through the
lab's router."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets

import httpx
from kubernetes import client

from ..playbook import lab_first_model
from .k8s_helpers import REPO, api, custom, run_play

ANNOTATION = "gpu-stack.llmops.io/api-key-sha256"


def _key(lab, ns: str, name: str) -> str:
    secret = client.CoreV1Api(api(lab)).read_namespaced_secret(f"{name}-api-key", ns)
    return base64.b64decode(secret.data["api-key"]).decode()


def _pods(lab, ns: str, cluster: str) -> dict:
    """uid -> (node type, key digest annotation) of the cluster's live pods."""
    pods = client.CoreV1Api(api(lab)).list_namespaced_pod(
        ns, label_selector=f"ray.io/cluster={cluster}").items
    return {p.metadata.uid: (p.metadata.labels["ray.io/node-type"],
                             (p.metadata.annotations or {}).get(ANNOTATION))
            for p in pods if p.metadata.deletion_timestamp is None}


def _models(lab, ns: str, key: str) -> int:
    """The status of GET /v1/models with ``key``, through the lab's router and the Route."""
    route = custom(lab, "route.openshift.io/v1", "routes", ns)[0]
    router = json.loads((lab.settings.home / "router.json").read_text())
    with httpx.Client(verify=router["ca"], timeout=30) as http:
        return http.get(router["url"] + "/v1/models", headers={
            "Host": route["spec"]["host"], "Authorization": f"Bearer {key}"}).status_code


def _serving(lab, work, key: str):
    rc, results, out = run_play(lab, work, playbook=REPO / "playbooks" / "serving.yml",
                                inventory=str(REPO / "inventories" / "lab"),
                                vars_file={"ray_vllm_api_key": key, **lab_first_model()},
                                env_extra={"GPU_LAB_HOME": str(lab.settings.home)})
    assert rc == 0, out[-6000:]
    assert key not in out  # the key never in the output (no_log), only its digest
    # the role's ray_vllm_cluster task loops over its models: one result per model
    serving = [item for r in results for item in (r.get("results") or [r]) if "rolled" in item]
    assert len(serving) == 1, out[-4000:]
    return serving[0], out


def check_key_rotation(lab, work, ns: str, name: str) -> None:
    cluster = f"{name}-0"
    old_key = _key(lab, ns, name)
    assert _models(lab, ns, old_key) == 200
    before = _pods(lab, ns, cluster)
    assert len(before) == 3

    new_key = "rotated-" + secrets.token_urlsafe(24)
    result, out = _serving(lab, work, new_key)
    assert result["changed"] is True and result["rolled"] == [cluster], out[-4000:]
    assert old_key not in out
    assert _key(lab, ns, name) == new_key
    after = _pods(lab, ns, cluster)
    assert len(after) == 3 and not set(after) & set(before)  # head and workers replaced
    heads = [digest for node_type, digest in after.values() if node_type == "head"]
    assert heads == [hashlib.sha256(new_key.encode()).hexdigest()]
    assert _models(lab, ns, new_key) == 200
    assert _models(lab, ns, old_key) == 401

    result, out = _serving(lab, work, new_key)  # the same key again: nothing rolls
    assert result["changed"] is False and result["rolled"] == [], out[-4000:]
    assert _pods(lab, ns, cluster) == after
