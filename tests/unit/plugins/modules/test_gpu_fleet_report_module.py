"""gpu_fleet_report: its documentation matches its argument spec, and bad workers fail
before any connection is made."""

from __future__ import annotations

import json

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.testing import patch_module_args
from ansible_collections.kubernetes.core.plugins.doc_fragments import k8s_auth_options
from ansible_collections.llmops.gpu_stack.plugins.modules import gpu_fleet_report


def _differences(spec: dict, doc: dict, path: str = "") -> list[str]:
    out = sorted(f"{path}{k}: only in one of spec/doc" for k in set(spec) ^ set(doc))
    for key in set(spec) & set(doc):
        s, d = spec[key], doc[key]
        for attr, fallback in (("type", "str"), ("default", None), ("required", False)):
            if s.get(attr, fallback) != d.get(attr, fallback):
                out.append(f"{path}{key}.{attr}: spec {s.get(attr)!r}, doc {d.get(attr)!r}")
        if "options" in s or "suboptions" in d:
            out += _differences(s.get("options", {}), d.get("suboptions", {}), f"{path}{key}.")
    return out


def test_documentation_matches_the_argument_spec():
    doc = yaml.safe_load(gpu_fleet_report.DOCUMENTATION)
    fragment = yaml.safe_load(k8s_auth_options.ModuleDocFragment.DOCUMENTATION)["options"]
    documented = {**fragment, **doc["options"]}
    assert _differences(gpu_fleet_report._argument_spec(), documented) == []
    yaml.safe_load(gpu_fleet_report.EXAMPLES)
    returned = yaml.safe_load(gpu_fleet_report.RETURN)
    assert {"fleet", "problems", "hardware", "table", "summary"} <= set(returned)


def test_the_checker_sees_a_drift():
    spec = {"a": {"type": "int", "default": 0}}
    assert _differences(spec, {"a": {"type": "int", "default": 1}}) == [
        "a.default: spec 0, doc 1"]


@pytest.mark.parametrize(("workers", "message"), [
    ([{"host": "esxi-0", "vm": "w"}, {"host": "esxi-1", "vm": "w"}], "w is listed twice"),
    ([{"node": "n"}], "give the ESXi host, the VM or both"),
])
def test_bad_workers_fail_before_connecting(capsys, tmp_path, workers, message):
    # a kubeconfig that does not exist and a vCenter nobody listens on: the module would
    # fail differently had it tried either
    args = {"kubeconfig": str(tmp_path / "absent"), "workers": workers,
            "vcenter": {"hostname": "127.0.0.1", "port": 9, "username": "u",
                        "password": "secret-pw"}}
    with patch_module_args(args), pytest.raises(SystemExit) as info:
        gpu_fleet_report.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    assert info.value.code == 1 and message in result["msg"]
    assert "secret-pw" not in out


def _run(args: dict, capsys) -> dict:
    with patch_module_args(args), pytest.raises(SystemExit) as info:
        gpu_fleet_report.main()
    out = capsys.readouterr().out
    assert info.value.code == 1 and "secret-pw" not in out
    return json.loads(out)


def test_vcenter_options_left_out_come_from_vmware_env(capsys, tmp_path, monkeypatch):
    pytest.importorskip("pyVmomi")  # without it the module stops on the missing package
    # what AWX's VMware vCenter credential injects; nobody listens on port 9
    for name in ("VMWARE_HOST", "VMWARE_USER", "VMWARE_PASSWORD", "VMWARE_PORT"):
        monkeypatch.delenv(name, raising=False)
    args = {"kubeconfig": str(tmp_path / "absent"), "vcenter": {"port": 9}}
    result = _run(args, capsys)
    assert "missing vSphere connection options: hostname (or $VMWARE_HOST), username " \
           "(or $VMWARE_USER), password (or $VMWARE_PASSWORD)" in result["msg"]

    monkeypatch.setenv("VMWARE_HOST", "127.0.0.1")
    monkeypatch.setenv("VMWARE_USER", "u")
    monkeypatch.setenv("VMWARE_PASSWORD", "secret-pw")
    result = _run(args, capsys)
    assert "missing vSphere connection options" not in result["msg"], result["msg"]
    checked = ArgumentSpecValidator(gpu_fleet_report._argument_spec()).validate(args)
    assert checked.error_messages == []
    vcenter = checked.validated_parameters["vcenter"]
    assert (vcenter["hostname"], vcenter["username"], vcenter["port"]) == ("127.0.0.1", "u", 9)
