"""The pod's own address and the interface that holds it, for Ray, vLLM, NCCL and Gloo.

vLLM and the collective libraries pick an interface on their own and can pick the
wrong one on a multi-homed pod (vllm#7815). The launcher sets, for itself and every
child (so also for the Ray processes it starts, whose workers inherit them):

- ``VLLM_HOST_IP``: the pod IP;
- ``NCCL_SOCKET_IFNAME`` and ``GLOO_SOCKET_IFNAME``: the interface holding that IP.

A value already present in the environment wins, so an operator can override any of
them. The pod IP comes from ``POD_IP`` (downward API ``status.podIP``), else from the
host name, else from the source address of the default route. IPv4 only.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Mapping

from gpu_stack_runtime.common.contract import POD_IP_ENV
from gpu_stack_runtime.launcher.errors import LaunchError

_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B


def _ioctl_ipv4(sock: socket.socket, request: int, ifname: str) -> str | None:
    packed = struct.pack("256s", ifname.encode()[:15])
    try:
        result = fcntl.ioctl(sock.fileno(), request, packed)
    except OSError:
        return None  # no IPv4 address on this interface
    return socket.inet_ntoa(result[20:24])


def interfaces() -> dict[str, ipaddress.IPv4Interface]:
    """Map each interface name to its primary IPv4 address and netmask."""
    found = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _index, name in socket.if_nameindex():
            address = _ioctl_ipv4(sock, _SIOCGIFADDR, name)
            netmask = _ioctl_ipv4(sock, _SIOCGIFNETMASK, name)
            if address and netmask:
                found[name] = ipaddress.IPv4Interface(f"{address}/{netmask}")
    return found


def interface_for(ip: str, available: Mapping[str, ipaddress.IPv4Interface] | None = None) -> str:
    """Name the interface holding ip: an exact address match first, then its subnet.

    The subnet rule lets a lab node on 127.0.0.3 resolve to ``lo`` (127.0.0.1/8).
    """
    available = interfaces() if available is None else available
    address = ipaddress.IPv4Address(ip)
    for name, iface in available.items():
        if iface.ip == address:
            return name
    for name, iface in available.items():
        if address in iface.network:
            return name
    listing = ", ".join(f"{n}={i.with_prefixlen}" for n, i in sorted(available.items()))
    raise LaunchError(
        f"no network interface holds the pod address {ip} (interfaces: {listing or 'none'}); "
        "set NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME explicitly"
    )


def pod_ip(environ: Mapping[str, str]) -> str:
    """The pod's own IPv4 address (see the module docstring for the order)."""
    explicit = environ.get(POD_IP_ENV, "").strip()
    candidates = [explicit] if explicit else []
    if not explicit:
        with contextlib.suppress(OSError):
            candidates.append(socket.gethostbyname(socket.gethostname()))
    for candidate in candidates:
        try:
            address = ipaddress.IPv4Address(candidate)
        except ValueError as exc:
            if explicit:
                raise LaunchError(f"{POD_IP_ENV}={explicit!r} is not an IPv4 address") from exc
            continue
        if explicit or not address.is_loopback:
            return str(address)
    return _default_route_source()


def _default_route_source() -> str:
    # A UDP "connect" sends nothing; it only asks the kernel which source address
    # the default route would use. 192.0.2.1 is TEST-NET-1 (RFC 5737).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))
        except OSError as exc:
            raise LaunchError(
                f"cannot determine the pod address: set {POD_IP_ENV} "
                "(downward API status.podIP)"
            ) from exc
        return sock.getsockname()[0]


def network_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to environ (only those not already set)."""
    ip = environ.get("VLLM_HOST_IP") or pod_ip(environ)
    added = {}
    if not environ.get("VLLM_HOST_IP"):
        added["VLLM_HOST_IP"] = ip
    need_ifname = [k for k in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME") if not environ.get(k)]
    if need_ifname:
        ifname = interface_for(ip)
        added.update({k: ifname for k in need_ifname})
    return added


def node_ip(environ: Mapping[str, str]) -> str:
    """The address Ray should advertise for this node: VLLM_HOST_IP once network_env ran."""
    return environ.get("VLLM_HOST_IP") or pod_ip(environ)


__all__ = ["POD_IP_ENV", "interface_for", "interfaces", "network_env", "node_ip", "pod_ip"]
