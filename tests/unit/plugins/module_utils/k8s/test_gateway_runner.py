"""gateway_runner.run against an in-memory cluster: config from the hand-overs, master key,
roll on change, idempotence, check mode, removal.

Outcomes are read back from the fake cluster's objects and its record of writes."""

from __future__ import annotations

import base64
import copy
import json

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.gateway import render as gw_render
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.gateway_runner import (
    Request,
    run,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import render
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan

from .fake_client import FakeClient

NS = "llm"
IMAGE = "registry.example.com/llmops/llm-gateway:0.1.0"
PLAN = build_plan({"preset": "llama-3-8b"},
                  {"nodes": 2, "gpus_per_node": 2, "gpu_memory_gib": 80},
                  layout={"tensor_parallel_size": 2, "pipeline_parallel_size": 1},
                  topology="head_without_gpus")
KEYS = {"llm-api-key": "backend-key-llama-0123456789", "qwen-api-key": "backend-key-qwen-9876"}


def _secret(name: str, key: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
            "data": {"api-key": base64.b64encode(key.encode()).decode()}}


def _served(name: str, served: str) -> list[dict]:
    cfg = {"name": name, "namespace": NS, "served_model_name": served,
           "api_key_secret": f"{name}-api-key"}
    return [render.handover(cfg, f"https://{name}.apps.example.com", PLAN),
            _secret(f"{name}-api-key", KEYS[f"{name}-api-key"])]


def _deployment_ready(fake: FakeClient, dep: dict) -> None:
    ready = copy.deepcopy(dep)
    want = dep["spec"]["replicas"]
    ready["metadata"]["generation"] = 1
    ready["status"] = {"observedGeneration": 1, "replicas": want, "updatedReplicas": want,
                       "availableReplicas": want}
    fake.put(ready)


def _router(fake: FakeClient, route: dict) -> None:
    admitted = copy.deepcopy(route)
    admitted["status"] = {"ingress": [{"host": "gw.apps.example.com", "conditions": [
        {"type": "Admitted", "status": "True"}]}]}
    fake.put(admitted)


def _cluster(*models) -> FakeClient:
    objs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}]
    for name, served in models or [("llm", "llama-3-8b")]:
        objs += _served(name, served)
    return FakeClient(objs, on_apply={"Deployment": _deployment_ready, "Route": _router})


def _request(**change) -> Request:
    return Request(**{"namespace": NS, "image": IMAGE, "wait_timeout": 30, **change})


def _config(fake: FakeClient) -> dict:
    cm = fake.find("ConfigMap", "llm-gateway-config", NS)
    return json.loads(cm["data"]["config.yaml"])


def _annotation(fake: FakeClient) -> str:
    dep = fake.find("Deployment", "llm-gateway", NS)
    return dep["spec"]["template"]["metadata"]["annotations"][
        gw_render.CONFIG_SHA256_ANNOTATION]


def _master(fake: FakeClient) -> str:
    secret = fake.find("Secret", "llm-gateway-master-key", NS)
    return base64.b64decode(secret["data"]["master-key"]).decode()


def test_present_writes_everything_and_a_rerun_changes_nothing():
    fake = _cluster(("llm", "llama-3-8b"), ("qwen", "qwen-0.5b"))
    out = run(fake, _request())
    assert out["changed"] and out["endpoint"] == "https://gw.apps.example.com"
    for kind, name in (("Deployment", "llm-gateway"), ("Service", "llm-gateway"),
                       ("Route", "llm-gateway"), ("NetworkPolicy", "llm-gateway"),
                       ("ConfigMap", "llm-gateway-config"), ("ConfigMap", "llm-gateway-endpoint"),
                       ("Secret", "llm-gateway-master-key")):
        assert fake.find(kind, name, NS) is not None, (kind, name)
    cfg = _config(fake)
    per_model = {}
    for entry in cfg["model_list"]:
        per_model.setdefault(entry["model_name"], []).append(entry)
    replicas = PLAN["ray_cluster"]["clusters"]
    assert {k: len(v) for k, v in per_model.items()} == {"llama-3-8b": replicas,
                                                         "qwen-0.5b": replicas}
    master = _master(fake)
    assert master.startswith("sk-") and len(master) > 30
    # no key in clear in any ConfigMap, Deployment or the result
    clear = json.dumps([fake.find("ConfigMap", "llm-gateway-config", NS),
                        fake.find("Deployment", "llm-gateway", NS),
                        fake.find("ConfigMap", "llm-gateway-endpoint", NS), out])
    assert master not in clear and not any(k in clear for k in KEYS.values())
    snapshot, writes = fake.snapshot(), len(fake.writes)
    again = run(fake, _request())
    # server-side apply of the same manifests: nothing moves, the Secret is not rewritten
    assert not again["changed"] and fake.snapshot() == snapshot
    assert ("apply", "Secret", "llm-gateway-master-key") not in fake.writes[writes:]
    assert _master(fake) == master  # generated once, kept


def test_removing_a_model_drops_its_entries_and_rolls_the_pods():
    fake = _cluster(("llm", "llama-3-8b"), ("qwen", "qwen-0.5b"))
    run(fake, _request())
    before = _annotation(fake)
    fake.delete("v1", "ConfigMap", "qwen-endpoint", NS, check_mode=False)
    out = run(fake, _request())
    assert out["changed"] and out["models"] == ["llama-3-8b"]
    assert {e["model_name"] for e in _config(fake)["model_list"]} == {"llama-3-8b"}
    assert _annotation(fake) != before
    assert fake.find("ConfigMap", "llm-gateway-endpoint", NS)["data"]["models"] == "llama-3-8b"


def test_a_rotated_backend_key_rolls_the_pods_without_showing_the_key():
    fake = _cluster()
    run(fake, _request())
    before = _annotation(fake)
    fake.put(_secret("llm-api-key", "a-brand-new-backend-key-42"), replace=True)
    out = run(fake, _request(diff=True))
    assert out["changed"] and _annotation(fake) != before
    assert "a-brand-new-backend-key-42" not in json.dumps(out)


def test_check_mode_writes_nothing_and_reports_the_change():
    fake = _cluster()
    out = run(fake, _request(check_mode=True, diff=True))
    assert out["changed"] and fake.writes == []
    assert fake.find("Deployment", "llm-gateway", NS) is None
    assert "Deployment/llm-gateway" in json.dumps(out["diff"])


def test_a_given_master_key_is_written_and_checked():
    fake = _cluster()
    key = "sk-" + "k" * 40
    run(fake, _request(master_key=key))
    assert _master(fake) == key
    with pytest.raises(InvalidInputError, match="must start with 'sk-'"):
        run(fake, _request(master_key="plain-password-12345678"))


def test_refusals_before_any_write():
    fake = _cluster()
    with pytest.raises(InvalidInputError, match="no served model nope"):
        run(fake, _request(models=["nope"]))
    fake.delete("v1", "Secret", "llm-api-key", NS, check_mode=False)
    with pytest.raises(InvalidInputError, match="API-key Secret llm/llm-api-key"):
        run(fake, _request())
    with pytest.raises(InvalidInputError, match="tag or a digest"):
        run(_cluster(), _request(image="llm-gateway"))
    empty = FakeClient([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}])
    with pytest.raises(InvalidInputError, match="no served model in namespace llm"):
        run(empty, _request())
    assert fake.writes == [("delete", "Secret", "llm-api-key")] and empty.writes == []


def test_absent_removes_what_present_wrote():
    fake = _cluster()
    run(fake, _request())
    out = run(fake, _request(state="absent"))
    assert out["changed"]
    for kind, name in (("Deployment", "llm-gateway"), ("Secret", "llm-gateway-master-key"),
                       ("ConfigMap", "llm-gateway-config"), ("Route", "llm-gateway")):
        assert fake.find(kind, name, NS) is None
    assert fake.find("ConfigMap", "llm-endpoint", NS) is not None  # the serving stage's
    assert not run(fake, _request(state="absent"))["changed"]
