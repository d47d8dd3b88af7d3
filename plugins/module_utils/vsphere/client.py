# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The one pyvmomi client: connect, translate faults, retry what is retryable.

No AnsibleModule here: modules pass a ``ConnectionParams``. Every vSphere call of the
collection goes through ``VsphereClient.call`` so faults become the common error types
and transient ones (busy host, lost connection...) are retried with capped backoff.
"""

from __future__ import annotations

import ssl

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    AuthError,
    ConnectionFailedError,
    GpuStackError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.retry import (
    Backoff,
    call_with_retries,
    is_transient,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.connection import (
    ConnectionParams,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.faults import (
    translate,
)

try:
    from pyVim.connect import Disconnect, SmartConnect
    from pyVmomi import vim

    HAS_PYVMOMI = True
    PYVMOMI_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - exercised only without pyvmomi
    HAS_PYVMOMI = False
    PYVMOMI_IMPORT_ERROR = _exc  # the modules report it with missing_required_lib

DEFAULT_BACKOFF = Backoff(tries=4, delay=0.5, factor=2.0, max_delay=5.0)


def _ssl_context(params: ConnectionParams) -> ssl.SSLContext:
    if not params.validate_certs:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=params.ca_path)


class VsphereClient:
    """A lazily connected vSphere session."""

    def __init__(self, params: ConnectionParams, backoff: Backoff = DEFAULT_BACKOFF,
                 connect=None):
        if not HAS_PYVMOMI and connect is None:
            raise ConnectionFailedError("the pyvmomi Python package is required")
        self.params = params
        self.backoff = backoff
        self._connect = connect or SmartConnect
        self._si = None
        self._content = None

    @property
    def si(self):
        if self._si is None:
            self._si = self._login()
        return self._si

    @property
    def content(self):
        """The ServiceContent, fetched once (each ``si.content`` would be a round-trip)."""
        if self._content is None:
            self._content = self.call("reading the service content", self.si.RetrieveContent)
        return self._content

    def _login(self):
        p = self.params
        what = f"connecting to vCenter {p.hostname}:{p.port} as {p.username}"
        try:
            return self._connect(host=p.hostname, port=p.port, user=p.username, pwd=p.password,
                                 sslContext=_ssl_context(p),
                                 httpConnectionTimeout=p.request_timeout)
        except Exception as exc:
            if HAS_PYVMOMI and isinstance(exc, vim.fault.InvalidLogin):
                raise AuthError(f"{what}: login refused (wrong user name or password)") from None
            raise translate(exc, what) from exc

    def call_once(self, what: str, func, *args, **kwargs):
        """Run ``func(*args, **kwargs)`` once, faults translated (see ``submit.py``)."""
        try:
            return func(*args, **kwargs)
        except GpuStackError:
            raise
        except Exception as exc:
            raise translate(exc, what) from exc

    def call(self, what: str, func, *args, **kwargs):
        """Run ``func(*args, **kwargs)``: faults translated, transient ones retried.

        Only for reads and idempotent writes: a task that must not run twice is
        submitted with ``submit.submit_task``.
        """
        return call_with_retries(self.call_once, what, func, *args, strategy=self.backoff,
                                 should_retry=is_transient, **kwargs)

    def retrieve(self, spec_set, what: str = "reading inventory"):
        """One RetrievePropertiesEx (plus ContinueRetrievePropertiesEx pages, if any)."""
        pc = self.content.propertyCollector
        options = vim.PropertyCollector.RetrieveOptions()
        result = self.call(what, pc.RetrievePropertiesEx, specSet=spec_set, options=options)
        objects = list(result.objects) if result else []
        while result is not None and result.token:
            result = self.call(what, pc.ContinueRetrievePropertiesEx, token=result.token)
            objects.extend(result.objects)
        return objects

    def close(self) -> None:
        if self._si is not None:
            try:
                Disconnect(self._si)
            finally:
                self._si = None
                self._content = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
