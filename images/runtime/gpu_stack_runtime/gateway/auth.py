"""The gateway's key check, LiteLLM's ``custom_auth`` hook.

The gateway runs LiteLLM's proxy without a database: the master key is its only key.
LiteLLM's own check answers a key other than the master key with 400 ("No connected
db."), which reads as a malformed request rather than a refused key. This hook, named
by the generated configuration (``general_settings.custom_auth``, the contract's
``GATEWAY_AUTH_HOOK``), admits the master key (compared in constant time) as the proxy's
admin and refuses every other key, or none, with 401. LiteLLM calls it for every
authenticated route; its probes (``/health/liveliness``, ``/health/readiness``) are not
authenticated and never reach it.

Imported only inside the gateway's LiteLLM (its image, the lab's gateway venv).
"""

from __future__ import annotations

import hmac
import os

from gpu_stack_runtime.common.contract import GATEWAY_MASTER_KEY_ENV


def key_matches(api_key: str | None, master_key: str | None) -> bool:
    """Whether ``api_key`` is the master key; an empty or unset master key admits none."""
    if not master_key or not api_key:
        return False
    return hmac.compare_digest(api_key.encode(), master_key.encode())


async def user_api_key_auth(request, api_key: str):
    """LiteLLM's ``custom_auth`` signature; the request itself is not looked at."""
    from litellm.proxy._types import LitellmUserRoles, ProxyException, UserAPIKeyAuth

    if key_matches(api_key, os.environ.get(GATEWAY_MASTER_KEY_ENV)):
        return UserAPIKeyAuth(api_key=api_key, user_role=LitellmUserRoles.PROXY_ADMIN)
    raise ProxyException(message="Authentication Error: a missing or wrong API key "
                                 "(this gateway admits its master key only)",
                         type="auth_error", param="api_key", code=401)
