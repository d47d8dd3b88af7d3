"""model_stage and ray_vllm_cluster refuse an unsafe model_dir before touching the cluster
(the fake clients record every read and write)."""

from __future__ import annotations

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s import (
    serving_runner,
    staging_runner,
)

from .fake_client import FakeClient, FakeClock
from .test_serving_runner import _cluster
from .test_serving_runner import _request as _serving_request

BAD = ["tiny ../other", "../other", "/models/tiny", "m;rm -rf x", "org//m"]


@pytest.mark.parametrize("model_dir", BAD)
@pytest.mark.parametrize("check_mode", [False, True])
def test_model_stage_refuses_an_unsafe_model_dir_before_any_read(model_dir, check_mode):
    fake = FakeClient()
    reads = []
    fake.controllers.append(lambda _cluster: reads.append(1))  # called before every read
    req = staging_runner.Request(namespace="llm", pvc={"name": "models", "size": "1Gi"},
                                 model_dir=model_dir, source={"type": "hub", "repo_id": "o/m"},
                                 image="runtime:1", check_mode=check_mode,
                                 wait_options=FakeClock().options())
    with pytest.raises(InvalidInputError, match="model_dir"):
        staging_runner.run(fake, req)
    assert reads == [] and fake.writes == [] and fake.objects == {}


@pytest.mark.parametrize("model_dir", BAD)
def test_ray_vllm_cluster_refuses_an_unsafe_model_dir_before_any_call(model_dir):
    fake = _cluster()
    with pytest.raises(InvalidInputError, match="model_dir"):
        serving_runner.run(fake, _serving_request(model_dir=model_dir))
    assert fake.calls == [] and fake.writes == []
