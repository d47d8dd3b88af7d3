"""The gateway's key check (gpu_stack_runtime.gateway.auth): the master key alone passes.

The hook itself, inside a real LiteLLM, is exercised by
tests/integration/serving/test_gateway.py (a wrong key, an ``sk-`` key and no key get 401)."""

from __future__ import annotations

import importlib

import pytest
from gpu_stack_runtime.common import contract
from gpu_stack_runtime.gateway import auth


@pytest.mark.parametrize(("api_key", "master", "admitted"), [
    ("sk-master", "sk-master", True),
    ("sk-master ", "sk-master", False),
    ("sk-maste", "sk-master", False),
    ("sk-other", "sk-master", False),
    ("", "sk-master", False),
    (None, "sk-master", False),
    ("", "", False),  # an unset master key admits nothing, not the empty key
    ("anything", None, False),
])
def test_only_the_master_key_is_admitted(api_key, master, admitted):
    assert auth.key_matches(api_key, master) is admitted


def test_the_hook_the_config_names_is_this_function():
    module, _sep, name = contract.GATEWAY_AUTH_HOOK.rpartition(".")
    assert getattr(importlib.import_module(module), name) is auth.user_api_key_auth
