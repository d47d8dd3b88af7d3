"""Watch streams: newline-delimited JSON events over a chunked response.

resourceVersion semantics as the real server: unset or ``"0"`` starts with synthetic
``ADDED`` events for the current state; a later version replays the history after it;
a version older than the kept history gets an ``ERROR`` event with a 410 Expired Status.
Selectors apply to both the new and the previous state, so an object leaving the
selection is seen as ``DELETED`` and one entering it as ``ADDED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from typing import Any

from aiohttp import web

from .errors import ApiError, bad_request
from .resources import ResourceType
from .selectors import field_selector, label_selector
from .service import ApiService
from .store import Event

_DEFAULT_TIMEOUT = 1800.0


def _translate(event: Event, selected: Any) -> str | None:
    now, before = selected(event.obj), event.old is not None and selected(event.old)
    if event.type == "ADDED":
        return "ADDED" if now else None
    if event.type == "DELETED":
        return "DELETED" if before or now else None
    if now and before:
        return "MODIFIED"
    if now:
        return "ADDED"
    return "DELETED" if before else None


async def serve_watch(request: web.Request, service: ApiService, rt: ResourceType,
                      namespace: str | None, name: str | None) -> web.StreamResponse:
    q = request.query
    labels = label_selector(q.get("labelSelector"))
    fields = field_selector(q.get("fieldSelector"), rt.plural, rt.builtin)

    def selected(obj: dict[str, Any]) -> bool:
        if name and obj["metadata"]["name"] != name:
            return False
        return labels(obj) and fields(obj)

    raw_rv = q.get("resourceVersion", "")
    if raw_rv not in ("", "0") and not raw_rv.isdigit():
        raise bad_request(f'invalid resource version: "{raw_rv}"')
    since = int(raw_rv) if raw_rv not in ("", "0") else None
    try:
        timeout = float(q.get("timeoutSeconds", _DEFAULT_TIMEOUT))
    except ValueError as exc:
        raise bad_request("timeoutSeconds must be a number") from exc

    store = service.store
    response = web.StreamResponse(status=200)
    response.content_type = "application/json"
    response.enable_chunked_encoding()
    await response.prepare(request)

    async def send(kind: str, obj: dict[str, Any]) -> None:
        out = copy.deepcopy(obj)
        out["apiVersion"] = rt.api_version
        await response.write((json.dumps({"type": kind, "object": out}) + "\n").encode())

    try:
        watcher, backlog = store.watch(rt.key, namespace if rt.namespaced else None, since)
    except ApiError as exc:
        await response.write((json.dumps({"type": "ERROR", "object": exc.status()}) + "\n")
                             .encode())
        await response.write_eof()
        return response
    try:
        if since is None:
            for obj in store.list(rt.key, namespace if rt.namespaced else None):
                if selected(obj):
                    await send("ADDED", obj)
        for event in backlog:
            kind = _translate(event, selected)
            if kind:
                await send(kind, event.obj)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                event = await asyncio.wait_for(watcher.queue.get(), remaining)
            except TimeoutError:
                break
            if event is None:
                break
            kind = _translate(event, selected)
            if kind:
                await send(kind, event.obj)
    except (ConnectionResetError, asyncio.CancelledError):
        store.unwatch(watcher)
        raise
    finally:
        store.unwatch(watcher)
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response
