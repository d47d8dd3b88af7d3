from __future__ import annotations

import ssl

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    AuthError,
    ConnectionFailedError,
    InvalidInputError,
    TransientError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.retry import Backoff
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.client import (
    VsphereClient,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.vsphere.connection import (
    ConnectionParams,
    vsphere_argument_spec,
)
from pyVmomi import vim, vmodl

PARAMS = {"hostname": "vc", "username": "u", "password": "s3cret", "port": 443}


def test_argument_spec_env_fallbacks_and_secrets():
    spec = vsphere_argument_spec()
    assert spec["password"]["no_log"] is True
    assert spec["validate_certs"]["default"] is True
    assert spec["hostname"]["fallback"][1] == ["VMWARE_HOST"]
    assert spec["ca_path"]["fallback"][1] == ["VMWARE_CA_PATH"]


def test_params_validation_and_repr():
    params = ConnectionParams.from_params(PARAMS)
    assert "s3cret" not in repr(params)
    assert params.validate_certs is True
    assert ConnectionParams.from_params({**PARAMS, "validate_certs": False}).validate_certs is False
    with pytest.raises(InvalidInputError, match="password"):
        ConnectionParams.from_params({**PARAMS, "password": None})
    with pytest.raises(InvalidInputError, match="port"):
        ConnectionParams.from_params({**PARAMS, "port": 70000})


def _client(connect):
    return VsphereClient(ConnectionParams.from_params(PARAMS), connect=connect,
                         backoff=Backoff(tries=3, delay=0, jitter=False))


def test_wrong_login_is_auth_error_without_password():
    def connect(**kwargs):
        assert kwargs["sslContext"].verify_mode == ssl.CERT_REQUIRED
        raise vim.fault.InvalidLogin(msg="Cannot complete login")

    with pytest.raises(AuthError) as err:
        _client(connect).si  # noqa: B018 - the property connects
    assert "s3cret" not in str(err.value.fail_kwargs())


def test_tls_failure_is_connection_error():
    def connect(**kwargs):
        raise ssl.SSLCertVerificationError("certificate verify failed")

    with pytest.raises(ConnectionFailedError, match="TLS verification failed"):
        _client(connect).si  # noqa: B018


def test_call_retries_transient_faults_then_gives_up():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise vmodl.fault.HostNotConnected(msg="rebooting")
        return "ok"

    client = _client(lambda **kw: None)
    assert client.call("updating", flaky) == "ok" and len(calls) == 3

    def down():
        raise vmodl.fault.HostNotConnected(msg="rebooting")

    with pytest.raises(TransientError) as err:
        client.call("updating", down)
    assert err.value.details["attempts"] == 3


def test_call_does_not_retry_other_faults():
    calls = []

    def broken():
        calls.append(1)
        raise vim.fault.InvalidState(msg="no")

    with pytest.raises(Exception, match="InvalidState"):
        _client(lambda **kw: None).call("x", broken)
    assert len(calls) == 1
