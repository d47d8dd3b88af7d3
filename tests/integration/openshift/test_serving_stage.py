"""Stages 5 and 6 in the lab, as the README's main command runs them: real Ray nodes and a
real vLLM (CPU) as the RayCluster's pods, reached through the lab's router. Everything the
playbooks claim is read back independently: the API objects, the head's own log, a
streamed completion sent by this test through the Route, the report files."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import httpx
import openai
import pytest
from gpu_lab.gpu_inventory import StaticGpuInventory, reference_site
from kubernetes import client

from ..lab.waiting import wait_for
from ..playbook import lab_first_model
from .k8s_helpers import REPO, api, custom, run_play
from .serving_key_rotation import check_key_rotation

pytestmark = [pytest.mark.lab, pytest.mark.slow]
NS, NAME, MODEL = "llm", "llm", "tiny-llama"


def _stats(out: str) -> dict:
    return json.loads(out[:out.rindex("}") + 1])["stats"]["localhost"]


@pytest.fixture(scope="module")
def served(k8s_lab_factory, tmp_path_factory):
    """The lab inventory's stages 2-6 against a lab of the reference site's 16 GPUs."""
    lab = k8s_lab_factory(gpu_inventory=StaticGpuInventory(reference_site()))
    home = lab.settings.home
    subprocess.run([sys.executable, "-m", "gpu_lab.tiny_model", str(home / "models" / MODEL)],
                   check=True, capture_output=True)
    work = tmp_path_factory.mktemp("serving-stage")
    stages = work / "stages.yml"
    stages.write_text("\n".join(
        f"- ansible.builtin.import_playbook: {REPO / 'playbooks' / p}"
        for p in ("openshift.yml", "plan.yml", "storage.yml", "serving.yml", "validate.yml")))
    rc, _t, out = _run(lab, work, stages)
    assert rc == 0, out[-6000:]
    yield lab, work, out
    _run(lab, work, REPO / "playbooks" / "serving.yml", "-e", "ray_vllm_state=absent")
    # the RayCluster's pods (real Ray and vLLM processes) are gone before other tests run
    core = client.CoreV1Api(api(lab))
    wait_for(lambda: not core.list_namespaced_pod(
        NS, label_selector="ray.io/is-ray-node=yes").items, "the serving pods removed",
        timeout=120, interval=1)


def _run(lab, work, playbook, *extra, json_out=False):
    return run_play(lab, work, playbook=playbook, inventory=str(REPO / "inventories" / "lab"),
                    extra=extra, json_out=json_out, vars_file=lab_first_model(),
                    env_extra={"GPU_LAB_HOME": str(lab.settings.home)})


def _head(lab) -> dict:
    core = client.CoreV1Api(api(lab))
    pods = core.list_namespaced_pod(NS, label_selector=f"ray.io/cluster={NAME}-0,"
                                    "ray.io/node-type=head").items
    assert len(pods) == 1
    return pods[0]


def test_real_tokens_through_the_route(served):
    lab, _work, out = served
    assert "4 of 4 GPUs joined" in client.CoreV1Api(api(lab)).read_namespaced_pod_log(
        _head(lab).metadata.name, NS)
    core = client.CoreV1Api(api(lab))
    key = base64.b64decode(core.read_namespaced_secret(f"{NAME}-api-key", NS)
                           .data["api-key"]).decode()
    assert key not in out
    route = custom(lab, "route.openshift.io/v1", "routes", NS)[0]
    router = json.loads((lab.settings.home / "router.json").read_text())
    http = httpx.Client(verify=router["ca"], headers={"Host": route["spec"]["host"]})
    llm = openai.OpenAI(base_url=router["url"] + "/v1", api_key=key, http_client=http)
    chunks = list(llm.completions.create(model=MODEL, prompt="Hello", max_tokens=16,
                                         stream=True, temperature=0))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert len(chunks) > 2 and text
    chat = llm.chat.completions.create(model=MODEL, max_tokens=8,
                                       messages=[{"role": "user", "content": "Hi"}])
    assert chat.usage.completion_tokens > 0
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=router["url"] + "/v1", api_key="wrong",
                      http_client=http).models.list()


def test_the_objects_are_what_the_issue_asks(served):
    lab, _work, _out = served
    cluster = custom(lab, "ray.io/v1", "rayclusters", NS)
    assert [c["metadata"]["name"] for c in cluster] == [f"{NAME}-0"]
    assert cluster[0]["status"]["readyWorkerReplicas"] == 2
    core = client.CoreV1Api(api(lab))
    pods = core.list_namespaced_pod(NS, label_selector=f"ray.io/cluster={NAME}-0").items
    assert len(pods) == 3
    for pod in pods:
        for container in pod.spec.containers:
            assert container.security_context.run_as_non_root is True
            assert container.security_context.allow_privilege_escalation is False
    workers = [p for p in pods if p.metadata.labels["ray.io/node-type"] == "worker"]
    assert sorted(w.spec.containers[0].resources.limits["nvidia.com/gpu"] for w in workers) == [
        "2", "2"]
    assert {w.spec.node_selector["gpu-stack.llmops.io/gpu-node"] for w in workers} == {"true"}
    svc = core.read_namespaced_service(NAME, NS)
    assert [p.port for p in svc.spec.ports] == [8000]
    route = custom(lab, "route.openshift.io/v1", "routes", NS)[0]
    assert route["spec"]["tls"]["termination"] == "edge"
    assert route["spec"]["port"]["targetPort"] == "api"
    net = client.NetworkingV1Api(api(lab))
    # Ray's ports: every port, only from pods of the same RayCluster (the full decision
    # table is tests/unit/plugins/module_utils/serving/test_ray_network_policy.py)
    peers = net.read_namespaced_network_policy(f"{NAME}-0-peers", NS)
    assert peers.spec.pod_selector.match_labels["ray.io/cluster"] == f"{NAME}-0"
    (peer_rule,) = peers.spec.ingress
    assert peer_rule._from[0].pod_selector.match_labels["ray.io/cluster"] == f"{NAME}-0"
    assert peer_rule._from[0].namespace_selector is None and peer_rule.ports is None
    # the heads: the API port from anywhere, the KubeRay operator on two ports
    policy = net.read_namespaced_network_policy(f"{NAME}-ray", NS)
    api_rule, operator_rule = policy.spec.ingress
    assert api_rule._from is None and [p.port for p in api_rule.ports] == [8000]
    assert sorted(p.port for p in operator_rule.ports) == [8265, 10001]
    assert cluster[0]["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] == (
        "127.0.0.1")


def test_the_report_and_chart_were_written(served):
    lab, _work, out = served
    report_dir = lab.settings.home / "validate"
    reports = sorted(report_dir.glob("*.json"))
    charts = sorted(report_dir.glob("*.png"))
    assert reports and charts, out[-3000:]
    report = json.loads(reports[-1].read_text())
    assert report["counts"]["ok"] == report["counts"]["total"] > 0
    assert report["output_tokens"] > 0 and report["ttft_ms"]["p50"] > 0
    assert charts[-1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_validate_alone_reads_what_serving_recorded(served):
    """playbooks/validate.yml in a new process: no fact of stage 5, only its hand-over."""
    lab, work, _out = served
    recorded = client.CoreV1Api(api(lab)).read_namespaced_config_map(
        f"{NAME}-endpoint", NS).data
    route = custom(lab, "route.openshift.io/v1", "routes", NS)[0]
    assert recorded["endpoint"] == f"https://{route['spec']['host']}"
    assert recorded["api_key_secret"] == f"{NAME}-api-key"
    assert recorded["served_model_name"] == MODEL and recorded["namespace"] == NS
    report = lab.settings.home / "validate" / "load-test.json"
    written = report.stat().st_mtime_ns if report.exists() else 0
    rc, _t, out = _run(lab, work, REPO / "playbooks" / "validate.yml",
                       "-e", json.dumps({"validate_requests": 4}))
    assert rc == 0, out[-4000:]
    assert f"Host {route['spec']['host']}" in out  # the recorded endpoint's host was used
    assert report.stat().st_mtime_ns > written
    assert json.loads(report.read_text())["counts"]["ok"] == 4


def test_rerun_and_check_mode_change_nothing(served):
    lab, work, _out = served
    before = _head(lab).metadata.uid
    rc, _t, out = _run(lab, work, REPO / "playbooks" / "serving.yml", json_out=True)
    assert rc == 0 and _stats(out)["changed"] == 0, out[-4000:]
    rc, _t, out = _run(lab, work, REPO / "playbooks" / "serving.yml", "--check", json_out=True)
    assert rc == 0 and _stats(out)["changed"] == 0, out[-4000:]
    assert _head(lab).metadata.uid == before  # the pods were not replaced


def test_rotating_the_key_rolls_the_pods(served):
    """Last, as it changes the key: serving_key_rotation.py (issue 14)."""
    lab, work, _out = served
    check_key_rotation(lab, work, NS, NAME)
