"""Call the gateway as a site's users do: with the ``openai`` SDK and with ``litellm``
(in its own virtual environment, ``.venv-gateway``, as LiteLLM cannot share one with
vLLM), through the router by the gateway Route's host."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import openai

from .playbook import REPO

GATEWAY_PYTHON = REPO / ".venv-gateway" / "bin" / "python"

_LITELLM_STREAM = (
    "import litellm, os, sys\n"
    "litellm.ssl_verify = os.environ['CA']\n"
    "out = litellm.completion(model='openai/' + os.environ['MODEL'],"
    " api_base=os.environ['URL'], api_key=os.environ['KEY'], stream=True, max_tokens=8,"
    " extra_headers={'Host': os.environ['HOST']},"
    " messages=[{'role': 'user', 'content': 'Hi'}])\n"
    "parts = [c.choices[0].delta.content or '' for c in out]\n"
    "print(len(parts), repr(''.join(parts)))\n")


def openai_client(router_url: str, ca: Path | str, host: str, key: str) -> openai.OpenAI:
    """The ``openai`` SDK pointed at the gateway behind the router."""
    http = httpx.Client(verify=str(ca), headers={"Host": host}, timeout=120)
    return openai.OpenAI(base_url=router_url + "/v1", api_key=key, http_client=http,
                         max_retries=0)


def openai_answers(llm: openai.OpenAI, model: str) -> dict:
    """A completion, a chat and a streamed chat from ``model``: what each returned."""
    completion = llm.completions.create(model=model, prompt="Hello", max_tokens=4)
    chat = llm.chat.completions.create(model=model, max_tokens=4, temperature=0,
                                       messages=[{"role": "user", "content": "Hi"}])
    chunks = list(llm.chat.completions.create(model=model, max_tokens=8, temperature=0,
                                              stream=True,
                                              messages=[{"role": "user", "content": "Hi"}]))
    return {"completion_tokens": completion.usage.completion_tokens,
            "completion_model": completion.model,
            "chat_tokens": chat.usage.completion_tokens, "chat_model": chat.model,
            "stream_chunks": len(chunks),
            "stream_text": "".join(c.choices[0].delta.content or ""
                                   for c in chunks if c.choices)}


def litellm_stream(router_url: str, ca: Path | str, host: str, key: str,
                   model: str) -> tuple[int, str]:
    """A streamed chat from ``model`` with the ``litellm`` client: (chunks, text)."""
    env = {**os.environ, "CA": str(ca), "MODEL": model, "URL": router_url + "/v1",
           "KEY": key, "HOST": host, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.run([str(GATEWAY_PYTHON), "-c", _LITELLM_STREAM], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    count, text = proc.stdout.strip().split(" ", 1)
    return int(count), text.strip("'\"")
