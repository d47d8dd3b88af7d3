"""Client of the simulator's fault-injection endpoint (``/gpulab/faults``)."""

from __future__ import annotations

import json
import ssl
import urllib.request

NEVER_RECONNECT = "NeverReconnect"


class FaultInjector:
    """Queue a vim fault or a delay for the next N calls of a SOAP method.

    ``target`` restricts it to one host or VM by name (for HostPciPassthruSystem calls
    the host's name). ``fault=NEVER_RECONNECT`` on ``RebootHost_Task`` keeps the host
    notResponding after the reboot until ``clear()``.
    """

    def __init__(self, fault_url: str, ca_path: str | None = None):
        self.url = fault_url
        self._ctx = ssl.create_default_context(cafile=ca_path) if ca_path else None

    def _call(self, method: str, body: dict | None = None) -> list[dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=self._ctx, timeout=10) as resp:
            return json.loads(resp.read())

    def inject(self, method: str, fault: str = "", *, target: str = "", count: int = 1,
               delay_ms: int = 0, message: str = "", fields: dict | None = None) -> list[dict]:
        body = {"method": method, "fault": fault, "target": target, "count": count,
                "delay_ms": delay_ms, "message": message, "fields": fields or {}}
        return self._call("POST", body)

    def never_reconnect(self, host: str) -> list[dict]:
        return self.inject("RebootHost_Task", NEVER_RECONNECT, target=host)

    def pending(self) -> list[dict]:
        return self._call("GET")

    def clear(self) -> list[dict]:
        """Drop pending injections and let hosts held by NEVER_RECONNECT come back."""
        return self._call("DELETE")
