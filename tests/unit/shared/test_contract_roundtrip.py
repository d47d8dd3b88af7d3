"""Both sides of the controller/runtime contract, in one process: the stager Job the
controller renders is parsed by the stager's own command line, and the launcher's exit
codes are the ones the controller knows."""

from __future__ import annotations

import os

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common import contract
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.staging import (
    ModelStaging,
    upload_dir,
)
from gpu_stack_runtime.launcher import errors as launch_errors
from gpu_stack_runtime.stager.cli import build_parser
from gpu_stack_runtime.stager.publish import StagingArea

_SOURCES = [
    {"type": "hub", "repo_id": "org/model", "revision": "abc123", "endpoint": "http://hub",
     "allow_patterns": ["*.json", "*.safetensors"], "ignore_patterns": ["*.bin"]},
    {"type": "s3", "bucket": "models", "prefix": "llama/", "endpoint_url": "http://s3:9000",
     "region": "eu-1"},
    {"type": "archive", "url": "http://files/m.tar.gz", "archive_sha256": "ab" * 32,
     "strip_components": 2},
    {"type": "http", "url": "http://files/m/", "manifest": "http://files/m/manifest.json"},
]
# model_stage source option -> the stager's parsed option
_PARSED = {"repo_id": "repo_id", "revision": "revision", "endpoint": "endpoint",
           "bucket": "bucket", "prefix": "prefix", "endpoint_url": "endpoint_url",
           "region": "region", "url": "url", "manifest": "manifest",
           "archive_sha256": "archive_sha256", "strip_components": "strip_components",
           "allow_patterns": "allow_pattern", "ignore_patterns": "ignore_pattern"}


def _job_env(source, *, manifest=None, credentials=None):
    staging = ModelStaging(None, "ns", {"name": "models"}, "org/model")
    objs = staging.job_manifests(source, "runtime:1", manifest, credentials or {},
                                 {"parallel": 3, "progress_interval": 7})
    job = next(o for o in objs if o["kind"] == "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}, container


def _parse(monkeypatch, env):
    for name in list(os.environ):
        if name.startswith(contract.STAGE_ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return build_parser().parse_args([])


@pytest.mark.parametrize("source", _SOURCES, ids=lambda s: s["type"])
def test_the_stager_parses_the_job_the_controller_renders(monkeypatch, source):
    env, container = _job_env(source)
    assert all(name.startswith(contract.STAGE_ENV_PREFIX) for name in env)
    args = _parse(monkeypatch, env)
    assert args.source == source["type"]
    assert args.dest == f"{contract.MODEL_MOUNT}/org/model"
    assert (args.jobs, args.progress_interval) == (3, 7.0)
    assert container["volumeMounts"][0]["mountPath"] == contract.MODEL_MOUNT
    for key, value in source.items():
        if key != "type":
            assert getattr(args, _PARSED[key]) == value, key


def test_credentials_and_an_uploaded_manifest_reach_the_stager(monkeypatch):
    env, _container = _job_env({"type": "hub", "repo_id": "org/model"},
                               manifest={"files": []}, credentials={"token": "t"})
    args = _parse(monkeypatch, env)
    assert args.token_file.endswith("/token")
    assert args.s3_credentials_dir and args.manifest.endswith("/manifest.json")


def test_the_upload_dir_is_where_the_stager_looks():
    assert upload_dir("org/model") == str(
        StagingArea(f"{contract.MODEL_MOUNT}/org/model").upload_dir)


def test_the_launchers_exit_codes_are_the_ones_the_controller_explains():
    codes = [launch_errors.EXIT_USAGE, launch_errors.EXIT_MODEL, launch_errors.EXIT_GPUS,
             launch_errors.EXIT_RAY]
    assert sorted(contract.LAUNCH_EXIT_REASONS) == codes
