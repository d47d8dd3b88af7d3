"""Assemble and run the API server: TLS on loopback, state on disk, controllers in-process.

``LabServer`` runs on its own asyncio loop, either in the foreground (``gpu-lab up`` starts
a daemon doing that) or in a background thread (test fixtures). Everything that touches
the store runs on that loop; ``call()`` runs a function there from another thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from ..config import LabSettings
from ..gpu_inventory import inventory_for
from . import labapi
from .admission import Admission
from .auth import Authenticator
from .builtins import register_builtins
from .crds import CrdLibrary, types_for_crd
from .faults import Faults
from .http import HttpApi
from .resources import Registry
from .service import ApiService
from .store import Store
from .subresources import register_reviews
from .tls import ensure_certificates, write_kubeconfig

log = logging.getLogger(__name__)
T = TypeVar("T")


class LabServer:
    def __init__(self, settings: LabSettings, gpu_inventory: Any = None,
                 controllers: bool = True, persist: bool = True) -> None:
        self.settings = settings
        self.gpu_inventory = gpu_inventory if gpu_inventory is not None else inventory_for(
            settings.home)
        self.with_controllers = controllers
        k8s = settings.k8s_dir
        k8s.mkdir(parents=True, exist_ok=True)
        self.registry = Registry()
        register_builtins(self.registry, settings.kube_minor)
        register_reviews(self.registry)
        self.crd_library = CrdLibrary(settings.crds, settings.crd_cache)
        self.store = Store(k8s / "state.json" if persist else None)
        self.service = ApiService(self.registry, self.store,
                                  Admission(self.store, settings.apps_domain))
        self.auth = Authenticator.load_or_create(k8s / "tokens.json")
        self.faults = Faults()
        self.http = HttpApi(self.service, self.registry, self.auth, self.faults,
                            settings.kube_version)
        self.controllers: Any = None
        self.router: Any = None
        labapi.register(self)
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.restored = False

    # --- properties for clients ----------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def router_url(self) -> str | None:
        """``https://127.0.0.1:PORT`` of the lab's router (None without controllers)."""
        return self.router.url if self.router is not None else None

    @property
    def router_ca(self) -> str:
        """The CA file that verifies the router's (and the API server's) certificate."""
        return str(self.settings.k8s_dir / "ca.crt")

    @property
    def kubeconfig(self) -> str:
        return str(self.settings.kubeconfig)

    @property
    def admin_token(self) -> str:
        return self.auth.admin_token

    @property
    def reader_token(self) -> str:
        return self.auth.reader_token

    # --- lifecycle -----------------------------------------------------------------------
    def _prepare_state(self) -> None:
        from .. import cluster

        cluster.register_openshift_types(self.registry, self.crd_library)
        self.restored = self.store.load()
        for crd in self.store.list(("apiextensions.k8s.io", "customresourcedefinitions")):
            for rt in types_for_crd(crd):
                self.registry.add(rt)
        cluster.seed(self.service, self.settings, self.crd_library)

    def _bind(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self.settings.port))
        except OSError:
            log.warning("port %s is busy; taking a free one", self.settings.port)
            sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        return sock

    async def start(self) -> None:
        self._prepare_state()
        k8s = self.settings.k8s_dir
        ca, crt, key = ensure_certificates(k8s)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(crt, key)
        sock = self._bind()
        self.http.server_address = f"127.0.0.1:{self.port}"
        self.settings.port = self.port
        if self.with_controllers:
            from ..router import Router

            self.router = Router(self)
            await self.router.start()
        self.settings.save()
        write_kubeconfig(self.settings.kubeconfig, self.url, ca, self.auth.admin_token,
                         self.auth.reader_token)
        if self.with_controllers:
            from ..controllers.manager import start_controllers

            self.controllers = start_controllers(self)
        self._runner = web.AppRunner(self.http.application(), access_log=None,
                                     handler_cancellation=True)
        await self._runner.setup()
        await web.SockSite(self._runner, sock, ssl_context=context).start()
        self._tasks.append(asyncio.create_task(self._persist_loop()))
        log.info("API server listening on %s", self.url)

    async def _persist_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.store.dirty:
                self.store.save()

    async def shutdown(self) -> None:
        if self.router is not None:
            await self.router.stop()
        if self.controllers is not None:
            await self.controllers.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.store.close_watchers()
        if self._runner is not None:
            await self._runner.cleanup()
        self.store.save()

    # --- thread mode (fixtures) ----------------------------------------------------------
    def start_in_thread(self, timeout: float = 60.0) -> LabServer:
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="gpu-lab-apiserver", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("the lab API server did not start in time")
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.shutdown(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the server's loop (where the store lives) and return its result."""
        if self._loop is None:
            return fn(*args, **kwargs)

        async def _run() -> T:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(_run(), self._loop).result(30)

    # --- foreground mode (daemon) --------------------------------------------------------
    async def serve_forever(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.shutdown()
