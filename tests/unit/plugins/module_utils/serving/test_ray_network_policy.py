"""Ray stays private: the rendered NetworkPolicies judged against every pod around them.

The policies of two releases in one namespace are evaluated together (policies add up,
so one release's rules must not open the other's pods) for every (source, destination,
port) of a realistic pod set: each RayCluster's head and workers with the labels KubeRay
gives them, a second release, the stager's Job pod, the KubeRay operator in its own
namespace (and look-alikes), the router and a client in another namespace.
"""

from __future__ import annotations

import copy
import itertools

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.render import (
    API_KEY_MOUNT,
    API_PORT,
    manifests,
)

from .netpol_eval import Pod, admits, selects

SITE = {"nodes": 8, "gpus_per_node": 2, "gpu_memory_gib": 40, "nvlink": False, "rdma": False}
CFG = {"name": "llm", "namespace": "serving", "image": "registry.example.com/llmops/ray-vllm:0.1.0",
       "served_model_name": "llama-3-70b", "model_dir": "llama-3-70b", "pvc": "models",
       "api_key_secret": "llm-api-key", "service_account": "ray-vllm", "ray_version": "2.60.0",
       "shm_size": "16Gi", "startup_checks": 180, "route_timeout": "600s",
       "node_selector": {"nvidia.com/gpu.present": "true"},
       "head_resources": {"cpu": "4", "memory": "16Gi"},
       "worker_resources": {"cpu": "8", "memory": "64Gi"}}
# GCS, dashboard, Ray client, metrics export, dashboard agent, a worker port, the
# object manager's usual range, the API port
PORTS = (6379, 8265, 10001, 8080, 52365, 10002, 19999, 41000, API_PORT)
OPERATOR_NS = "kuberay-operator"
OPERATOR_LABELS = {"app.kubernetes.io/component": "kuberay-operator",
                   "app.kubernetes.io/name": "kuberay-operator"}


def _kuberay_pods(rc: dict) -> list[tuple[Pod, dict]]:
    """The pods KubeRay makes of a RayCluster: the template's labels plus its own."""
    name, ns = rc["metadata"]["name"], rc["metadata"]["namespace"]
    spec = rc["spec"]
    groups = [("head", "headgroup", 1, spec["headGroupSpec"])]
    groups += [("worker", g["groupName"], g["replicas"], g) for g in spec["workerGroupSpecs"]]
    out = []
    for node_type, group, count, group_spec in groups:
        for i in range(count):
            labels = {**group_spec["template"]["metadata"]["labels"],
                      "ray.io/cluster": name, "ray.io/node-type": node_type,
                      "ray.io/group": group, "ray.io/is-ray-node": "yes",
                      "ray.io/identifier": f"{name}-{node_type}",
                      "app.kubernetes.io/created-by": "kuberay-operator"}
            pod = Pod(f"{name}-{group}-{i}", ns, labels)
            out.append((pod, {"cluster": (ns, name), "head": node_type == "head"}))
    return out


def _world():
    """The policies of two releases and every pod with what it truly is."""
    plan = build_plan({"preset": "llama-3-70b"}, SITE)
    assert plan["ray_cluster"]["clusters"] >= 2, "the test needs two replicas"
    assert plan["ray_cluster"]["worker_groups"], "the test needs worker pods"
    other_cfg = {**copy.deepcopy(CFG), "name": "other", "api_key_secret": "other-api-key"}
    objs = manifests(plan, CFG) + manifests(build_plan({"preset": "llama-3-8b"}, SITE),
                                            other_cfg)
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    pods = [p for o in objs if o["kind"] == "RayCluster" for p in _kuberay_pods(o)]
    pods += [
        (Pod("stage-llama-3-70b-x1", "serving", {"app.kubernetes.io/component": "model-stager",
                                                 "job-name": "stage-llama-3-70b-x1"}), {}),
        (Pod("kuberay-operator-7d9", OPERATOR_NS, OPERATOR_LABELS), {"operator": True}),
        (Pod("other-operator", OPERATOR_NS, {"app": "something-else"}), {}),
        (Pod("operator-look-alike", "serving", OPERATOR_LABELS), {}),
        (Pod("router-default-1", "openshift-ingress",
             {"ingresscontroller.operator.openshift.io/deployment-ingresscontroller":
              "default"}), {}),
        (Pod("client", "apps", {"app": "chat-ui"}), {}),
    ]
    return policies, pods


def _expected(src: dict, dst: dict, port: int) -> bool:
    """What the issue asks for, from what each pod is (never from its labels)."""
    if dst["head"] and port == API_PORT:
        return True
    if src.get("cluster") == dst["cluster"]:
        return True
    return bool(src.get("operator")) and dst["head"] and port in (8265, 10001)


def test_every_pod_reaches_ray_only_as_the_issue_says():
    policies, pods = _world()
    release = [(p, t) for p, t in pods if "cluster" in t]
    decisions = wrong = 0
    lines = []
    for (src, s_truth), (dst, d_truth) in itertools.product(pods, release):
        if src == dst:
            continue
        for port in PORTS:
            got = admits(policies, src, dst, port)
            decisions += 1
            if got != _expected(s_truth, d_truth, port):
                wrong += 1
                lines.append(f"{src.namespace}/{src.name} -> {dst.name}:{port} "
                             f"{'allowed' if got else 'refused'}")
    assert not wrong, "\n".join(lines[:40])
    assert decisions > 1000  # the world is as big as intended
    # UDP is never opened to strangers either
    head = next(p for p, t in release if t["head"])
    stranger = next(p for p, t in pods if p.name == "client")
    assert not admits(policies, stranger, head, 6379, "UDP")


def test_same_cluster_pods_reach_each_other_on_every_port():
    policies, pods = _world()
    clusters: dict = {}
    for pod, truth in pods:
        if "cluster" in truth:
            clusters.setdefault(truth["cluster"], []).append(pod)
    assert len(clusters) >= 3  # two replicas of llm, at least one of other
    for members in clusters.values():
        assert len(members) >= 2
        for src, dst in itertools.permutations(members, 2):
            for port in (6379, 8265, 10001, 52365, 10002, 19999, 61234):
                assert admits(policies, src, dst, port), (src.name, dst.name, port)


def test_an_empty_operator_namespace_drops_the_operator_rule():
    plan = build_plan({"preset": "llama-3-8b"}, SITE)
    cfg = {**CFG, "kuberay_operator_namespace": "", "kuberay_operator_pod_labels": {}}
    policies = [o for o in manifests(plan, cfg) if o["kind"] == "NetworkPolicy"]
    head = Pod("llm-0-head", "serving", {"app.kubernetes.io/instance": "llm",
                                         "ray.io/cluster": "llm-0", "ray.io/node-type": "head"})
    operator = Pod("op", OPERATOR_NS, OPERATOR_LABELS)
    assert not admits(policies, operator, head, 10001)
    assert admits(policies, operator, head, API_PORT)


def test_operator_setting_and_moved_head_ports():
    plan = build_plan({"preset": "llama-3-8b"}, SITE)
    cfg = {**CFG, "head_ray_params": {"ray-client-server-port": 10050},
           "kuberay_operator_namespace": "ray-system",
           "kuberay_operator_pod_labels": {"app": "kuberay"}}
    policies = [o for o in manifests(plan, cfg) if o["kind"] == "NetworkPolicy"]
    head = Pod("llm-0-head", "serving", {"app.kubernetes.io/instance": "llm",
                                         "ray.io/cluster": "llm-0", "ray.io/node-type": "head"})
    operator = Pod("op", "ray-system", {"app": "kuberay"})
    assert admits(policies, operator, head, 10050)
    assert not admits(policies, operator, head, 10001)
    assert not admits(policies, Pod("op", OPERATOR_NS, OPERATOR_LABELS), head, 10050)
    with pytest.raises(InvalidInputError, match="pod_labels"):
        manifests(plan, {**CFG, "kuberay_operator_pod_labels": {}})
    with pytest.raises(InvalidInputError, match="not a port number"):
        manifests(plan, {**CFG, "head_ray_params": {"dashboard-port": "eighty"}})


def test_the_dashboard_listens_on_the_pods_loopback_only():
    plan = build_plan({"preset": "llama-3-8b"}, SITE)
    for rc in (o for o in manifests(plan, CFG) if o["kind"] == "RayCluster"):
        assert rc["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    with pytest.raises(InvalidInputError, match="dashboard-host"):
        manifests(plan, {**CFG, "head_ray_params": {"dashboard-host": "0.0.0.0"}})


def test_no_secret_in_any_container_environment():
    """Keys reach the launcher as files of the Secret's volume: every env value is the pod
    IP, a GPU switch or the user's own; nothing references the Secret."""
    plan = build_plan({"preset": "llama-3-70b"}, SITE)
    clusters = [o for o in manifests(plan, CFG) if o["kind"] == "RayCluster"]
    for rc in clusters:
        templates = [rc["spec"]["headGroupSpec"]["template"]]
        templates += [g["template"] for g in rc["spec"]["workerGroupSpecs"]]
        for template in templates:
            for container in template["spec"]["containers"]:
                for env in container.get("env") or []:
                    assert env["name"] in ("POD_IP", "NVIDIA_VISIBLE_DEVICES"), env
                    assert "secretKeyRef" not in str(env), env
        head_spec = rc["spec"]["headGroupSpec"]["template"]["spec"]
        head = head_spec["containers"][0]
        args = head["args"]
        assert args[args.index("--api-key-file") + 1] == f"{API_KEY_MOUNT}/api-key"
        assert args[args.index("--metrics-key-file") + 1] == f"{API_KEY_MOUNT}/metrics-key"
        secret_volumes = [v["secret"]["secretName"] for v in head_spec["volumes"]
                          if "secret" in v]
        assert secret_volumes == ["llm-api-key"]
        assert {"name": "api-key", "mountPath": API_KEY_MOUNT, "readOnly": True} in (
            head["volumeMounts"])
        for group in rc["spec"]["workerGroupSpecs"]:  # workers hold no key at all
            assert not [v for v in group["template"]["spec"]["volumes"] if "secret" in v]


def test_an_open_api_renders_no_key_files():
    plan = build_plan({"preset": "llama-3-8b"}, SITE)
    rc = next(o for o in manifests(plan, {**CFG, "api_key_secret": ""})
              if o["kind"] == "RayCluster")
    args = rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["args"]
    assert "--api-key-file" not in args and "--metrics-key-file" not in args


# --- the evaluator itself: the API's semantics on small cases -------------------------

A = Pod("a", "ns1", {"app": "a", "tier": "x"})
B = Pod("b", "ns1", {"app": "b"})
C = Pod("c", "ns2", {"app": "a"}, )
WEB = Pod("web", "ns1", {"app": "web"}, {"http": 8080})


def _pol(ingress, selector=None, ns="ns1", types=("Ingress",)):
    return {"metadata": {"name": "p", "namespace": ns},
            "spec": {"podSelector": selector or {}, "policyTypes": list(types),
                     "ingress": ingress}}


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    ({}, {"x": "1"}, True),
    ({"matchLabels": {"x": "1"}}, {"x": "1", "y": "2"}, True),
    ({"matchLabels": {"x": "1"}}, {"x": "2"}, False),
    ({"matchExpressions": [{"key": "x", "operator": "In", "values": ["1", "2"]}]},
     {"x": "2"}, True),
    ({"matchExpressions": [{"key": "x", "operator": "NotIn", "values": ["1"]}]}, {}, True),
    ({"matchExpressions": [{"key": "x", "operator": "NotIn", "values": ["1"]}]},
     {"x": "1"}, False),
    ({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, {}, False),
    ({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, {}, True),
])
def test_evaluator_selectors(selector, labels, expected):
    assert selects(selector, labels) is expected


def test_evaluator_semantics():
    # no policy selects the pod: open; an empty rule list: closed
    assert admits([], C, A, 1)
    assert not admits([_pol([])], B, A, 1)
    # Egress-only policies do not isolate ingress
    assert admits([_pol([], types=("Egress",))], B, A, 1)
    # an empty podSelector peer is the policy's namespace only
    assert admits([_pol([{"from": [{"podSelector": {}}]}])], B, A, 1)
    assert not admits([_pol([{"from": [{"podSelector": {}}]}])], C, A, 1)
    # namespaceSelector AND podSelector in one peer; two peers are OR
    both = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ns2"}},
            "podSelector": {"matchLabels": {"app": "b"}}}
    assert not admits([_pol([{"from": [both]}])], C, A, 1)
    either = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ns2"}}},
              {"podSelector": {"matchLabels": {"app": "b"}}}]
    assert admits([_pol([{"from": either}])], C, A, 1)
    assert admits([_pol([{"from": either}])], B, A, 1)
    # ports: protocol default, ranges, named ports; a rule without from admits anyone
    rule = [{"ports": [{"port": 80}, {"port": 9000, "endPort": 9010, "protocol": "UDP"},
                       {"port": "http"}]}]
    assert admits([_pol(rule)], C, WEB, 80) and not admits([_pol(rule)], C, WEB, 80, "UDP")
    assert admits([_pol(rule)], C, WEB, 9005, "UDP")
    assert not admits([_pol(rule)], C, WEB, 9011, "UDP")
    assert admits([_pol(rule)], C, WEB, 8080) and not admits([_pol(rule)], C, A, 8080)
    # policies add up; a policy of another namespace does not apply
    closed = _pol([], selector={"matchLabels": {"app": "a"}})
    opened = _pol([{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}])
    assert not admits([closed], B, A, 1) and admits([closed, opened], B, A, 1)
    assert admits([_pol([], ns="ns2")], B, A, 1)
