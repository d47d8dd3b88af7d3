"""End to end: tiny model + launcher + real vLLM (CPU, lab pod site), through the openai client."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving_procs import run_python

openai = pytest.importorskip("openai")

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PROMPT = "The quick brown fox"
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def client(served_model):
    return openai.OpenAI(base_url=served_model.base_url, api_key=served_model.api_key,
                         timeout=60, max_retries=0)


def test_models_lists_the_served_name(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]
    assert models.data[0].max_model_len == 512


def test_completion(client):
    reply = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=MAX_TOKENS,
                                      temperature=0, extra_body={"ignore_eos": True})
    assert reply.usage.completion_tokens == MAX_TOKENS
    assert reply.choices[0].finish_reason == "length"
    assert isinstance(reply.choices[0].text, str)
    again = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=MAX_TOKENS,
                                      temperature=0, extra_body={"ignore_eos": True})
    assert again.choices[0].text == reply.choices[0].text  # greedy: same model, same text


def test_streamed_completion(client):
    stream = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=MAX_TOKENS,
                                       temperature=0, stream=True,
                                       stream_options={"include_usage": True},
                                       extra_body={"ignore_eos": True})
    chunks = list(stream)
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert len(texts) >= 2  # really streamed, not one final body
    assert chunks[-1].usage.completion_tokens == MAX_TOKENS
    plain = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=MAX_TOKENS,
                                      temperature=0, extra_body={"ignore_eos": True})
    assert "".join(texts) == plain.choices[0].text


def test_chat_completion_applies_the_models_chat_template(client, served_model):
    messages = [{"role": "system", "content": "You are a tiny model."},
                {"role": "user", "content": "hello world"}]
    reply = client.chat.completions.create(model="tiny", messages=messages,
                                           max_tokens=MAX_TOKENS, temperature=0,
                                           extra_body={"ignore_eos": True})
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage.completion_tokens == MAX_TOKENS
    # Independent count: the generator's tokenizer with its own chat template.
    local = run_python(f"""
        import json
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained({served_model.model_dir!r})
        messages = {messages!r}
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                             tokenize=False)
        ids = tokenizer(text, add_special_tokens=False).input_ids
        print(json.dumps({{"text": text, "count": len(ids)}}))
    """)
    assert reply.usage.prompt_tokens == local["count"]
    assert local["text"].endswith("<|im_start|>assistant\n")


def test_api_key_is_required_and_never_leaks(served_model):
    anonymous = openai.OpenAI(base_url=served_model.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.models.list()
    vllm_pid = served_model.head.child_pid("vllm")
    cmdline = Path(f"/proc/{vllm_pid}/cmdline").read_bytes().decode()
    assert served_model.api_key not in cmdline
    assert served_model.api_key not in served_model.head.text()
    environ = Path(f"/proc/{vllm_pid}/environ").read_bytes().split(b"\0")
    assert f"VLLM_API_KEY={served_model.api_key}".encode() in environ
    assert f"GPU_STACK_METRICS_KEY={served_model.metrics_key}".encode() in environ
    assert served_model.metrics_key not in cmdline + served_model.head.text()
    # Ray (started by the launcher) holds neither key
    for launcher in (served_model.head, served_model.worker):
        ray_environ = Path(f"/proc/{launcher.child_pid('ray')}/environ").read_bytes()
        assert b"VLLM_API_KEY=" not in ray_environ
        assert served_model.api_key.encode() not in ray_environ
        assert served_model.metrics_key.encode() not in ray_environ


def test_vllm_runs_with_the_pods_network_environment(served_model):
    vllm_pid = served_model.head.child_pid("vllm")
    environ = dict(e.split("=", 1) for e in
                   Path(f"/proc/{vllm_pid}/environ").read_bytes().decode().split("\0") if "=" in e)
    assert environ["VLLM_HOST_IP"] == "127.0.0.2"
    assert environ["NCCL_SOCKET_IFNAME"] == environ["GLOO_SOCKET_IFNAME"] == "lo"
    assert environ["RAY_ADDRESS"] == served_model.ray_address
