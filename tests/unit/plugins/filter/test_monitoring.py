"""The monitoring role's filters: the rendering's errors as one filter error, and the
hand-overs matched to their Services' selectors by namespace and name."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.llmops.gpu_stack.plugins.filter.monitoring import (
    FilterModule,
    monitoring_manifests,
    monitoring_servers,
)


def _handover(name: str, ns: str, **data) -> dict:
    return {"metadata": {"name": f"{name}-endpoint", "namespace": ns},
            "data": {"namespace": ns, "service": name, "api_key_secret": f"{name}-api-key",
                     "clusters": f"{name}-0", "backend": "ray", **data}}


def _service(name: str, ns: str, selector: dict) -> dict:
    return {"metadata": {"name": name, "namespace": ns}, "spec": {"selector": selector}}


def test_each_handover_takes_its_own_services_selector():
    servers = monitoring_servers(
        [_handover("a", "llm"), _handover("b", "llm", clusters="", backend="deployment")],
        [_service("b", "llm", {"pick": "b"}), _service("a", "other", {"pick": "wrong"}),
         _service("a", "llm", {"pick": "a"})])
    assert [(s["name"], s["selector"], s["ray"], s["backend"]) for s in servers] == [
        ("a", {"pick": "a"}, True, "ray"), ("b", {"pick": "b"}, False, "deployment")]
    assert servers[0]["api_key_secret"] == "a-api-key"
    # a Service not found: the backend's default selector is rendered later
    assert monitoring_servers([_handover("c", "llm")], [])[0]["selector"] is None


def test_a_rendering_error_is_a_filter_error():
    with pytest.raises(AnsibleFilterError, match=r"monitoring: .*unknown alert thresholds"):
        monitoring_manifests({"namespace": "llm", "thresholds": {"nope": 1}})
    assert set(FilterModule().filters()) == {"monitoring_manifests", "monitoring_servers"}
    objs = monitoring_manifests({"namespace": "llm", "servers": monitoring_servers(
        [_handover("a", "llm")], [_service("a", "llm", {"pick": "a"})])})
    assert next(o for o in objs if o["kind"] == "Service")["spec"]["selector"] == {"pick": "a"}
