"""The stager Job's new contract, both sides in one process: the verification and lock
options the controller renders are what the stager parses, and a signed URL reaches the
stager only through the run's Secret (secretKeyRef), never as a plain value."""

from __future__ import annotations

import json
import os

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common import contract
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.staging import ModelStaging
from gpu_stack_runtime.stager.cli import build_parser

SIGNED = "https://bucket.example/m.tar?X-Amz-Credential=AK&X-Amz-Signature=deadbeef"


def _render(source, credentials=None, **options):
    staging = ModelStaging(None, "ns", {"name": "models"}, "org/model", run_id="r1")
    return {o["kind"]: o for o in staging.job_manifests(
        source, "runtime:1", None, credentials or {}, {"parallel": 2, **options})}


def _resolve(objs) -> dict:
    """What the kubelet gives the container: values, and secretKeyRef read from the Secret."""
    data = (objs.get("Secret") or {}).get("stringData") or {}
    env = {}
    for item in objs["Job"]["spec"]["template"]["spec"]["containers"][0]["env"]:
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            assert ref["name"] == objs["Secret"]["metadata"]["name"]
            env[item["name"]] = data[ref["key"]]
        else:
            env[item["name"]] = item["value"]
    return env


def _parse(monkeypatch, env):
    for name in list(os.environ):
        if name.startswith(contract.STAGE_ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return build_parser().parse_args([])


def test_verify_lock_wait_and_upload_dir_reach_the_stager(monkeypatch):
    args = _parse(monkeypatch, _resolve(_render({"type": "hub", "repo_id": "o/m"},
                                                verify=True, lock_wait=900,
                                                upload_dir="/models/up/r1")))
    assert args.verify is True and args.lock_wait == 900.0
    assert args.upload_dir == "/models/up/r1"
    args = _parse(monkeypatch, _resolve(_render({"type": "hub", "repo_id": "o/m"})))
    assert args.verify is False and args.lock_wait == 3600.0


def test_a_signed_url_travels_in_the_secret_only(monkeypatch):
    objs = _render({"type": "archive", "url": SIGNED})
    assert "deadbeef" not in json.dumps(objs["Job"])
    assert objs["Secret"]["metadata"]["name"] == "stage-org-model-r1-credentials"
    assert set(objs["Secret"]["stringData"]) == {"source-url"}
    assert _parse(monkeypatch, _resolve(objs)).url == SIGNED
    # a Job without credentials mounts no credentials volume
    volumes = objs["Job"]["spec"]["template"]["spec"]["volumes"]
    assert [v["name"] for v in volumes] == ["models"]


def test_a_plain_url_stays_a_plain_value():
    objs = _render({"type": "archive", "url": "https://files.example/m.tar"})
    assert "Secret" not in objs
    env = _resolve(objs)
    assert env[contract.STAGE_SOURCE_ENV["url"]] == "https://files.example/m.tar"
