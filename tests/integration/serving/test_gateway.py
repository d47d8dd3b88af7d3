"""The gateway as a real process pod of the lab (LiteLLM's proxy from .venv-gateway) in
front of the session's vLLM (``served_model``), deployed by the llm_gateway role.

In a fresh namespace of the shared lab: the serving stage's API-key Secret, its hand-over
ConfigMap (written by ``serving.render.handover`` itself, two replicas) and, for each
replica, a head pod relaying to the session's vLLM behind the head Service KubeRay would
create (``<cluster>-head-svc``). Each relay logs the requests that reach it, so the test
sees independently which replica LiteLLM chose. Through the lab's router and the
gateway's Route: ``/v1/models`` lists the model, the ``openai`` SDK gets a chat and a
streamed chat, the ``litellm`` client (in the gateway's own venv) a streamed chat, every
request reaches vLLM through the replicas' Services (both of them), an unknown model is a
clear 400 and a request without the master key (none, a wrong one, the model's own) a
401. No key is in the ConfigMap or the Deployment; a rerun changes nothing.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import httpx
import openai
import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import render
from integration.gateway_clients import GATEWAY_PYTHON, litellm_stream, openai_client
from integration.playbook import run_module, run_playbook
from routed import _RELAY as RELAY
from routed import IMAGE

pytestmark = [pytest.mark.lab, pytest.mark.slow]

NAME, MODEL, REPLICAS = "tiny", "tiny", 2
GATEWAY_IMAGE = "registry.example.com/llmops/llm-gateway:0.1.0"
PLAN = {"ray_cluster": {"clusters": REPLICAS}, "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _replica(core, ns: str, index: int, upstream: str, work: Path) -> Path:
    """A head pod of replica ``index`` relaying to vLLM, and KubeRay's head Service."""
    cluster, port, log = f"{NAME}-{index}", _free_port(), work / f"arrivals-{index}.jsonl"
    (work / f"refuse-{index}").write_text("0")
    labels = {"app.kubernetes.io/instance": NAME, "ray.io/cluster": cluster,
              "ray.io/node-type": "head"}
    core.create_namespaced_pod(ns, {
        "metadata": {"name": f"{cluster}-head-x", "labels": labels},
        "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
            "name": "ray-head", "image": IMAGE, "command": ["python", "-c", RELAY],
            "args": ["0.0.0.0", str(port), upstream, str(log), str(work / f"refuse-{index}")],
            "ports": [{"name": "api", "containerPort": port}]}]}})
    core.create_namespaced_service(ns, {"metadata": {"name": f"{cluster}-head-svc"}, "spec": {
        "selector": {"ray.io/cluster": cluster, "ray.io/node-type": "head"},
        "ports": [{"name": "api", "port": 8000, "targetPort": "api"}]}})
    return log


def _arrivals(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _role(work: Path, role_vars: dict):
    """The llm_gateway role as a play runs it; the module's result (its registered task)."""
    task = {"name": "gateway",
            "ansible.builtin.import_role": {"name": "llmops.gpu_stack.llm_gateway"}}
    rc, results, out = run_playbook(work, [task], vars_file=role_vars)
    module = [r for r in results if "config_sha256" in r]
    return rc, (module[0] if module else {}), out


@pytest.fixture(scope="module")
def gateway(served_model, k8s_lab, tmp_path_factory):
    from kubernetes import client, config

    api = config.new_client_from_config(k8s_lab.kubeconfig, context="lab-admin")
    core = client.CoreV1Api(api)
    ns = f"gw-{os.getpid()}-{time.monotonic_ns() % 100000}"
    core.create_namespace({"metadata": {"name": ns}})
    work = tmp_path_factory.mktemp("gateway")
    core.create_namespaced_secret(ns, {"metadata": {"name": f"{NAME}-api-key"},
                                       "stringData": {"api-key": served_model.api_key}})
    upstream = served_model.base_url.removeprefix("http://").removesuffix("/v1")
    logs = [_replica(core, ns, i, upstream, work) for i in range(REPLICAS)]
    handover = render.handover({"name": NAME, "namespace": ns, "served_model_name": MODEL,
                                "api_key_secret": f"{NAME}-api-key"}, None, PLAN)
    core.create_namespaced_config_map(ns, handover)
    args = {"kubeconfig": str(k8s_lab.kubeconfig), "context": "lab-admin", "namespace": ns,
            "image": GATEWAY_IMAGE, "wait_timeout": 240}
    started = time.monotonic()
    rc, result, out = _role(work, {
        "llm_gateway_k8s_auth": {"kubeconfig": args["kubeconfig"], "context": "lab-admin"},
        "llm_gateway_namespace": ns, "llm_gateway_image": GATEWAY_IMAGE,
        "llm_gateway_wait_timeout": 240})
    assert rc == 0, out[-4000:]
    print(f"\ngateway deployed in {time.monotonic() - started:.1f} s")
    yield {"core": core, "api": api, "ns": ns, "result": result, "args": args, "work": work,
           "logs": logs, "out": out}
    core.delete_namespace(ns)


def _client(k8s_lab, gateway, key) -> openai.OpenAI:
    return openai_client(k8s_lab.router_url, k8s_lab.router_ca,
                         gateway["result"]["endpoint"].removeprefix("https://"), key)


def _master_key(gateway) -> str:
    secret = gateway["core"].read_namespaced_secret("llm-gateway-master-key", gateway["ns"])
    return base64.b64decode(secret.data["master-key"]).decode()


def test_models_chat_and_stream_through_the_gateway(k8s_lab, gateway, served_model):
    key = _master_key(gateway)
    assert key.startswith("sk-") and key not in gateway["out"]
    llm = _client(k8s_lab, gateway, key)
    assert [m.id for m in llm.models.list()] == [MODEL]
    chat = llm.chat.completions.create(model=MODEL, max_tokens=4, temperature=0,
                                       messages=[{"role": "user", "content": "Hi"}])
    assert chat.usage.completion_tokens > 0
    chunks = list(llm.chat.completions.create(model=MODEL, max_tokens=8, temperature=0,
                                              stream=True,
                                              messages=[{"role": "user", "content": "Hi"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 2 and text
    # what reached vLLM came through the replicas' Services with the backend's own key
    # (the relays saw the requests; vLLM answered them, so the key was vLLM's)
    seen = {i for i, log in enumerate(gateway["logs"]) if any(
        a["path"] == "/v1/chat/completions" for a in _arrivals(log))}
    assert seen, "no chat request reached a replica"
    # LiteLLM spreads the model's requests over both replicas (random choice: stop as
    # soon as both have been seen; 30 tries miss one with odds of 2**-29)
    for _attempt in range(30):
        if seen == set(range(REPLICAS)):
            break
        llm.completions.create(model=MODEL, prompt="x", max_tokens=1)
        seen |= {i for i, log in enumerate(gateway["logs"]) if any(
            a["path"] == "/v1/completions" for a in _arrivals(log))}
    assert seen == set(range(REPLICAS))


def test_the_litellm_client_streams_through_the_gateway(k8s_lab, gateway):
    if not GATEWAY_PYTHON.exists():
        pytest.skip(".venv-gateway is missing (tests/bootstrap.sh makes it)")
    count, text = litellm_stream(k8s_lab.router_url, k8s_lab.router_ca,
                                 gateway["result"]["endpoint"].removeprefix("https://"),
                                 _master_key(gateway), MODEL)
    assert count > 2 and text


def test_refusals_key_and_unknown_model(k8s_lab, gateway, served_model):
    host = gateway["result"]["endpoint"].removeprefix("https://")
    with httpx.Client(verify=k8s_lab.router_ca, headers={"Host": host}, timeout=60) as http:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        # no key, a wrong key, a wrong key shaped like LiteLLM's keys, the model's own key:
        # each refused with 401 (the image's key check; LiteLLM alone answers 400)
        for auth in (None, "wrong", "sk-" + "0" * 24, served_model.api_key):
            headers = {"Authorization": f"Bearer {auth}"} if auth else {}
            for method, path, payload in (
                    ("GET", "/v1/models", None), ("POST", "/v1/chat/completions", body),
                    ("POST", "/v1/completions", {"model": MODEL, "prompt": "x"})):
                response = http.request(method, k8s_lab.router_url + path, json=payload,
                                        headers=headers)
                assert response.status_code == 401, (auth is None, path, response.status_code,
                                                     response.text)
                assert "Authentication Error" in response.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="Invalid model name"):
        _client(k8s_lab, gateway, _master_key(gateway)).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)


def test_no_key_in_clear_and_a_rerun_changes_nothing(gateway, served_model):
    from kubernetes import client

    ns, core = gateway["ns"], gateway["core"]
    config_map = core.read_namespaced_config_map("llm-gateway-config", ns)
    deployment = client.AppsV1Api(gateway["api"]).read_namespaced_deployment("llm-gateway", ns)
    text = json.dumps([config_map.data, gateway["api"].sanitize_for_serialization(deployment)])
    assert served_model.api_key not in text and _master_key(gateway) not in text
    entries = json.loads(config_map.data["config.yaml"])["model_list"]
    assert [e["model_name"] for e in entries] == [MODEL] * REPLICAS
    rc, result, out = run_module(gateway["work"], "llm_gateway", gateway["args"])
    assert rc == 0 and result["changed"] is False, out[-3000:]


def test_the_validate_role_tests_through_the_gateway(k8s_lab, gateway):
    """validate --tags smoke_gateway finds the gateway by its hand-over alone (a run of its own)
    and its requests reach vLLM through the replicas (read back from the relays)."""
    before = sum(len(_arrivals(log)) for log in gateway["logs"])
    role_vars = {
        "validate_namespace": gateway["ns"],
        "validate_k8s_auth": {"kubeconfig": str(k8s_lab.kubeconfig), "context": "lab-admin"},
        "validate_gateway_base_url": k8s_lab.router_url,
        "validate_gateway_host_header": gateway["result"]["endpoint"].removeprefix("https://"),
        "validate_ca_path": str(k8s_lab.router_ca)}
    task = {"name": "validate",
            "ansible.builtin.import_role": {"name": "llmops.gpu_stack.validate"}}
    rc, _results, out = run_playbook(gateway["work"], [task], extra=("--tags", "smoke_gateway"),
                                     vars_file=role_vars)
    assert rc == 0, out[-4000:]
    assert f"1 model(s) through {gateway['result']['endpoint']}" in out
    after = [a for log in gateway["logs"] for a in _arrivals(log)]
    assert len(after) - before >= 2  # a chat and a streamed chat reached vLLM
    assert _master_key(gateway) not in out
