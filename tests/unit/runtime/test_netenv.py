"""The pod address and its interface: read from the real machine and from given maps."""

import ipaddress

import pytest
from gpu_stack_runtime.launcher import LaunchError, netenv

IFACES = {
    "lo": ipaddress.IPv4Interface("127.0.0.1/8"),
    "eth0": ipaddress.IPv4Interface("10.128.2.17/23"),
    "net1": ipaddress.IPv4Interface("192.168.50.4/24"),
}


def test_exact_address_wins_over_subnet():
    assert netenv.interface_for("10.128.2.17", IFACES) == "eth0"
    assert netenv.interface_for("192.168.50.4", IFACES) == "net1"


def test_lab_loopback_addresses_resolve_to_lo_by_subnet():
    assert netenv.interface_for("127.0.0.3", IFACES) == "lo"


def test_address_on_no_interface_is_an_error_listing_the_interfaces():
    with pytest.raises(LaunchError) as err:
        netenv.interface_for("172.30.0.9", IFACES)
    assert "172.30.0.9" in str(err.value) and "eth0=10.128.2.17/23" in str(err.value)


def test_this_machine_has_loopback_on_lo():
    found = netenv.interfaces()  # read through the kernel (SIOCGIFADDR), not parsed text
    assert found["lo"].ip == ipaddress.IPv4Address("127.0.0.1")
    assert netenv.interface_for("127.0.0.2") == "lo"


def test_network_env_from_pod_ip():
    env = netenv.network_env({"POD_IP": "127.0.0.5"})
    assert env == {"VLLM_HOST_IP": "127.0.0.5", "NCCL_SOCKET_IFNAME": "lo",
                   "GLOO_SOCKET_IFNAME": "lo"}


def test_explicit_values_win_and_are_not_repeated():
    env = netenv.network_env({"POD_IP": "127.0.0.5", "NCCL_SOCKET_IFNAME": "ib0",
                              "VLLM_HOST_IP": "127.0.0.6"})
    assert env == {"GLOO_SOCKET_IFNAME": "lo"}


def test_bad_pod_ip_is_an_error():
    with pytest.raises(LaunchError, match="not an IPv4 address"):
        netenv.pod_ip({"POD_IP": "pod-a"})


def test_without_pod_ip_a_non_loopback_address_is_found():
    ip = ipaddress.IPv4Address(netenv.pod_ip({}))
    assert not ip.is_loopback
    assert netenv.interface_for(str(ip)) in netenv.interfaces()
