"""The REST protocol over aiohttp: paths, verbs, query options, bodies, Status errors.

Routing is by path shape (``/api/v1/namespaces/{ns}/{plural}/{name}/{sub}``, ``/apis/...``,
the legacy ``/watch/`` prefix), so resources registered at run time are served at once.
``/lab/...`` is the lab's own admin API (fault injection and controller hooks).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from . import discovery
from .auth import Authenticator, User, authorize, authorize_path
from .errors import ApiError, bad_request, method_not_allowed, path_not_found
from .eviction import evict
from .faults import Faults
from .patch import APPLY_PATCH, JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH
from .resources import Registry, ResourceType
from .service import ApiService, Context
from .subresources import scale_of, write_scale
from .watch import serve_watch

log = logging.getLogger(__name__)

LabHandler = Callable[[web.Request, Any], Awaitable[Any]]
PodHook = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


@dataclass
class Target:
    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    watch_path: bool = False


class HttpApi:
    def __init__(self, service: ApiService, registry: Registry, auth: Authenticator,
                 faults: Faults, kube_version: str) -> None:
        self.service = service
        self.registry = registry
        self.auth = auth
        self.faults = faults
        self.kube_version = kube_version
        self.server_address = "127.0.0.1:0"
        self.lab_routes: dict[tuple[str, str], LabHandler] = {}
        # Pod subresources served by the kubelet: "log" and "exec".
        self.pod_hooks: dict[str, PodHook] = {}

    def application(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            user = self.auth.authenticate(request.headers.get("Authorization"))
            return await self._dispatch(request, user)
        except ApiError as exc:
            return _status_response(exc)
        except Exception as exc:  # keep serving; report like the real server
            log.exception("internal error on %s %s", request.method, request.path)
            return _status_response(ApiError(500, "InternalError",
                                             f"Internal error occurred: {exc}"))

    async def _dispatch(self, request: web.Request, user: User) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        if path.startswith("/lab/"):
            return await self._lab(request, user, path)
        authorize_path(user, path)
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        if path == "/version":
            return _json(discovery.version_info(self.kube_version))
        if path == "/api":
            return _json(discovery.core_versions(self.server_address))
        if path == "/apis":
            return _json(discovery.group_list(self.registry))
        if parts[0] == "apis" and len(parts) == 2:
            return _json_or_404(discovery.group(self.registry, parts[1]))
        if parts[0] == "api" and len(parts) == 2:
            return _json_or_404(discovery.resource_list(self.registry, "", parts[1]))
        if parts[0] == "apis" and len(parts) == 3:
            return _json_or_404(discovery.resource_list(self.registry, parts[1], parts[2]))
        target = self._target(parts)
        return await self._resource(request, user, target)

    def _target(self, parts: list[str]) -> Target:
        if parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise path_not_found("/" + "/".join(parts))
        watch_path = rest[0] == "watch"
        if watch_path:
            rest = rest[1:]
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and not (
                len(rest) == 3 and rest[2] in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise path_not_found("/" + "/".join(parts))
        rt = self.registry.lookup(group, version, rest[0])
        if rt is None:
            raise path_not_found("/" + "/".join(parts))
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub and sub not in rt.subresources:
            raise path_not_found("/" + "/".join(parts))
        if not rt.namespaced:
            namespace = None
        return Target(rt, namespace, name, sub, watch_path)

    async def _resource(self, request: web.Request, user: User, t: Target) -> web.StreamResponse:
        q = request.query
        verb = _verb(request.method, t, q)
        if t.subresource == "exec":  # a websocket upgrade is a GET, authorized as create
            verb = "create"
        if not t.rt.plural.startswith("selfsubject"):
            authorize(user, verb, t.rt.plural, t.rt.group, t.namespace, t.name, t.subresource)
        fault = self.faults.check(verb, t.rt.plural, t.rt.group, t.namespace, t.name)
        if fault is not None:
            raise fault
        if t.rt.virtual is not None and verb == "create" and hasattr(t.rt.virtual, "create"):
            return _json(t.rt.virtual.create(await _body(request), user), 201)
        if t.rt.virtual is not None and verb not in ("get", "list"):
            raise method_not_allowed(verb, t.rt.plural)
        if t.subresource in ("log", "exec") and t.rt.plural == "pods":
            pod = self.service.get(t.rt, t.namespace, t.name or "")
            hook = self.pod_hooks.get(t.subresource)
            if hook is None:
                raise bad_request(f"pods/{t.subresource} needs the lab's kubelet (controllers "
                                  "are disabled in this lab)")
            return await hook(request, pod)
        ctx = self._context(request, user)
        svc = self.service
        if t.subresource == "scale":
            if verb == "get":
                return _json(scale_of(svc.get(t.rt, t.namespace, t.name or "")))
            return _json(write_scale(svc, t.rt, t.namespace, t.name or "", request.method,
                                     request.content_type, await _body(request), ctx))
        if verb == "watch":
            return await serve_watch(request, svc, t.rt, t.namespace, t.name)
        if verb == "get":
            return _json(svc.get(t.rt, t.namespace, t.name or ""))
        if verb == "list":
            limit = int(q["limit"]) if q.get("limit", "").isdigit() else None
            return _json(svc.list(t.rt, t.namespace, q.get("labelSelector"),
                                  q.get("fieldSelector"), limit, q.get("continue")))
        if verb == "create" and t.subresource == "eviction" and t.rt.plural == "pods":
            return _json(evict(svc, t.namespace or "", t.name or "", await _body(request), ctx),
                         201)
        if verb == "create" and t.subresource == "binding":
            body = await _body(request)
            target = (body.get("target") or {}).get("name") if isinstance(body, dict) else None
            if not target:
                raise bad_request("binding target name is required")
            svc.bind_pod(t.namespace or "", t.name or "", target, ctx)
            return _json({"kind": "Status", "apiVersion": "v1", "metadata": {},
                          "status": "Success", "code": 201}, 201)
        if verb == "create":
            obj = svc.create(t.rt, t.namespace, await _body(request), ctx)
            return _json(obj, 201, ctx.warnings)
        if verb == "update":
            obj = svc.update(t.rt, t.namespace, t.name or "", await _body(request), ctx,
                             t.subresource)
            return _json(obj, 200, ctx.warnings)
        if verb == "patch":
            content_type = request.content_type
            if content_type not in (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH):
                raise ApiError(415, "UnsupportedMediaType",
                               f"the body of the request was in an unknown format - accepted "
                               f"media types include: {JSON_PATCH}, {MERGE_PATCH}, "
                               f"{APPLY_PATCH}, {STRATEGIC_PATCH}")
            existed = t.name is not None and svc.store.get(
                t.rt.key, t.namespace or "", t.name) is not None
            obj = svc.patch(t.rt, t.namespace, t.name or "", content_type,
                            await _body(request, yaml_ok=content_type == APPLY_PATCH), ctx,
                            t.subresource)
            return _json(obj, 200 if existed else 201, ctx.warnings)
        if verb == "delete":
            options = await _delete_options(request)
            ctx.dry_run = ctx.dry_run or options.get("dryRun") == ["All"]
            obj = svc.delete(t.rt, t.namespace, t.name or "", ctx, options)
            pending = bool(obj["metadata"].get("finalizers")) and not ctx.dry_run
            return _json(obj, 202 if pending else 200)
        if verb == "deletecollection":
            return _json(svc.delete_collection(t.rt, t.namespace, q.get("labelSelector"),
                                               q.get("fieldSelector"), ctx))
        raise method_not_allowed(request.method, t.rt.plural)

    def _context(self, request: web.Request, user: User) -> Context:
        q = request.query
        dry_run = q.getall("dryRun", [])
        if any(v != "All" for v in dry_run):
            raise bad_request(f'Invalid dryRun value: "{dry_run[0]}", allowed values are "All"')
        validation = q.get("fieldValidation", "Warn")
        if validation not in ("Strict", "Warn", "Ignore"):
            raise bad_request(f"fieldValidation must be one of Ignore, Warn, Strict: "
                              f"{validation}")
        manager = q.get("fieldManager") or request.headers.get("User-Agent", "unknown").split(
            "/")[0]
        if len(manager) > 128:
            raise bad_request("fieldManager: Too long: may not be more than 128 bytes")
        force = q.get("force", "false").lower() == "true"
        return Context(user=user.name, field_manager=manager, field_validation=validation,
                       dry_run=bool(dry_run), force=force)

    async def _lab(self, request: web.Request, user: User, path: str) -> web.StreamResponse:
        if user.read_only:
            raise ApiError(403, "Forbidden", f'User "{user.name}" cannot use the lab admin API')
        handler = self.lab_routes.get((request.method, path))
        if handler is None:
            raise path_not_found(path)
        body = await _body(request) if request.can_read_body else None
        return _json(await handler(request, body))


def _verb(method: str, t: Target, q: Any) -> str:
    watching = t.watch_path or q.get("watch", "").lower() in ("true", "1")
    if method == "GET":
        if watching:
            return "watch"
        return "get" if t.name else "list"
    if method == "POST":
        return "create"
    if method == "PUT" and t.name:
        return "update"
    if method == "PATCH" and t.name:
        return "patch"
    if method == "DELETE":
        return "delete" if t.name else "deletecollection"
    raise method_not_allowed(method, t.rt.plural)


async def _body(request: web.Request, yaml_ok: bool = False) -> Any:
    raw = await request.read()
    if not raw:
        raise bad_request("the body of the request is empty")
    try:
        return json.loads(raw)
    except ValueError:
        if not yaml_ok and request.content_type not in ("application/yaml", "text/yaml"):
            raise bad_request("the body of the request could not be decoded as JSON") from None
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise bad_request(f"error decoding YAML: {exc}") from exc


async def _delete_options(request: web.Request) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if request.can_read_body:
        raw = await request.read()
        if raw.strip():
            try:
                options = json.loads(raw)
            except ValueError as exc:
                raise bad_request("the body of the request could not be decoded") from exc
    q = request.query
    if "propagationPolicy" in q:
        options["propagationPolicy"] = q["propagationPolicy"]
    if "gracePeriodSeconds" in q:
        options["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
    if q.getall("dryRun", []):
        options["dryRun"] = q.getall("dryRun")
    return options


def _json(body: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    response = web.Response(text=json.dumps(body), status=status,
                            content_type="application/json")
    for warning in warnings or []:
        response.headers.add("Warning", f"299 - {json.dumps(warning)}")
    return response


def _json_or_404(body: Any) -> web.Response:
    if body is None:
        raise path_not_found("")
    return _json(body)


def _status_response(exc: ApiError) -> web.Response:
    response = _json(exc.status(), exc.code)
    for key, value in exc.headers.items():
        response.headers[key] = value
    return response
