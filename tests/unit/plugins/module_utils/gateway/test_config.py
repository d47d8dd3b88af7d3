"""gateway.config: LiteLLM's config from the serving stage's hand-overs; no secret in it."""

from __future__ import annotations

import json

import pytest
import yaml
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.gateway import config
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving import render
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan

PLAN = build_plan({"preset": "llama-3-8b"},
                  {"nodes": 4, "gpus_per_node": 2, "gpu_memory_gib": 80},
                  layout={"tensor_parallel_size": 2, "pipeline_parallel_size": 1},
                  topology="head_without_gpus")


def _handover(name="llm", served="llama-3-8b", secret="llm-api-key", **extra) -> dict:
    """What the serving stage itself writes (serving.render.handover), plus ``extra``."""
    cfg = {"name": name, "namespace": "llm", "served_model_name": served,
           "api_key_secret": secret}
    cm = render.handover(cfg, "https://llm.apps.example.com", PLAN)
    cm["data"].update(extra)
    return cm


def test_one_entry_per_replica_under_one_model_name():
    replicas = PLAN["ray_cluster"]["clusters"]
    assert replicas >= 2
    b = config.backend(_handover())
    cfg = config.litellm_config([b])
    entries = cfg["model_list"]
    assert len(entries) == replicas
    assert {e["model_name"] for e in entries} == {"llama-3-8b"}
    assert len({e["litellm_params"]["api_base"] for e in entries}) == replicas
    # every replica's head Service, in-cluster, with the API port
    env = {e["name"]: e.get("value") for e in config.pod_env([b], "gw-master-key")}
    urls = sorted(env[e["litellm_params"]["api_base"].removeprefix("os.environ/")]
                  for e in entries)
    assert urls == [f"http://llm-{i}-head-svc.llm.svc:8000/v1" for i in range(replicas)]
    assert all(e["litellm_params"]["model"] == "openai/llama-3-8b" for e in entries)


def test_replica_services_of_the_handover_win():
    b = config.backend(_handover(replica_services="a-0,a-1:8080"))
    assert [r["url"] for r in b["replicas"]] == ["http://a-0.llm.svc:8000/v1",
                                                 "http://a-1.llm.svc:8080/v1"]


def test_without_clusters_the_models_service():
    cm = _handover()
    del cm["data"]["clusters"]
    assert [r["url"] for r in config.backend(cm)["replicas"]] == ["http://llm.llm.svc:8000/v1"]


def test_keys_are_references_never_values():
    b = config.backend(_handover())
    cfg = config.litellm_config([b])
    text = config.config_text(cfg)
    assert yaml.safe_load(text) == cfg  # LiteLLM reads it as YAML
    assert cfg["general_settings"]["master_key"] == "os.environ/LITELLM_MASTER_KEY"
    # no tokenizer download from the hub on requests (a disconnected gateway would try)
    assert cfg["litellm_settings"]["disable_hf_tokenizer_download"] is True
    # the image's key check (gpu_stack_runtime.gateway.auth): a wrong key gets 401
    assert cfg["general_settings"]["custom_auth"] == (
        "gpu_stack_runtime.gateway.auth.user_api_key_auth")
    keys = {e["litellm_params"]["api_key"] for e in cfg["model_list"]}
    assert keys == {"os.environ/GATEWAY_KEY_LLM_API_KEY"}
    env = config.pod_env([b], "gw-master-key")
    by_name = {e["name"]: e for e in env}
    assert by_name["GATEWAY_KEY_LLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "llm-api-key", "key": "api-key"}
    assert by_name["LITELLM_MASTER_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "gw-master-key", "key": "master-key"}
    # no key-looking value anywhere in the config or the plain env values
    plain = [e["value"] for e in env if "value" in e]
    assert not any("sk-" in v for v in plain) and "sk-" not in text


def test_two_models_routing_and_retries():
    a = config.backend(_handover())
    cm = _handover(name="qwen", served="qwen-0.5b", secret="")
    cm["data"]["clusters"] = ""
    cm["data"]["replica_services"] = "qwen-0,qwen-1"
    q = config.backend(cm)
    cfg = config.litellm_config([q, a], {"num_retries": 3})
    names = [e["model_name"] for e in cfg["model_list"]]
    assert names == sorted(names) and set(names) == {"llama-3-8b", "qwen-0.5b"}
    open_keys = {e["litellm_params"]["api_key"] for e in cfg["model_list"]
                 if e["model_name"] == "qwen-0.5b"}
    assert open_keys == {config.OPEN_BACKEND_KEY}
    assert cfg["router_settings"]["num_retries"] == 3
    assert cfg["litellm_settings"]["num_retries"] == 3
    ids = [e["model_info"]["id"] for e in cfg["model_list"]]
    assert len(set(ids)) == len(ids)


def test_digest_moves_with_config_env_and_keys():
    b = config.backend(_handover())
    text = config.config_text(config.litellm_config([b]))
    env = config.pod_env([b], "m")
    base = config.config_digest(text, env, {"llm-api-key": "aa"})
    assert base == config.config_digest(text, json.loads(json.dumps(env)), {"llm-api-key": "aa"})
    assert base != config.config_digest(text + " ", env, {"llm-api-key": "aa"})
    assert base != config.config_digest(text, env[:-1], {"llm-api-key": "aa"})
    assert base != config.config_digest(text, env, {"llm-api-key": "bb"})


def test_refusals():
    with pytest.raises(InvalidInputError, match="at least one"):
        config.litellm_config([])
    a, b = config.backend(_handover()), config.backend(_handover(name="other"))
    with pytest.raises(InvalidInputError, match="model name 'llama-3-8b'"):
        config.litellm_config([a, b])
    cm = _handover()
    del cm["data"]["served_model_name"]
    with pytest.raises(InvalidInputError, match="llm/llm-endpoint lacks served_model_name"):
        config.backend(cm)
    with pytest.raises(InvalidInputError, match="not a Service name"):
        config.backend(_handover(replica_services="Bad_Name"))
