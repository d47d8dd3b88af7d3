"""The lab's fault rules: ``skip`` lets matching requests through before the fault."""

from __future__ import annotations

import pytest
from gpu_lab.apiserver.errors import ApiError
from gpu_lab.apiserver.faults import Faults


def test_skip_lets_the_first_matches_through_then_fails_the_next():
    faults = Faults()
    faults.add({"verb": "patch", "resource": "persistentvolumeclaims", "code": 409,
                "skip": 2, "namespace": "ns"})
    assert faults.check("patch", "persistentvolumeclaims", "", "other", "models") is None
    assert faults.check("patch", "persistentvolumeclaims", "", "ns", "models") is None
    assert faults.check("patch", "persistentvolumeclaims", "", "ns", "models") is None
    err = faults.check("patch", "persistentvolumeclaims", "", "ns", "models")
    assert err is not None and err.code == 409 and err.reason == "Conflict"
    assert faults.check("patch", "persistentvolumeclaims", "", "ns", "models") is None
    assert faults.describe() == []


def test_a_skipping_rule_leaves_the_request_to_the_next_rule():
    faults = Faults()
    faults.add({"resource": "secrets", "code": 409, "skip": 1})
    faults.add({"resource": "secrets", "code": 503})
    assert faults.check("delete", "secrets", "", "ns", "s").code == 503
    assert faults.check("delete", "secrets", "", "ns", "s").code == 409


def test_a_negative_skip_is_refused():
    with pytest.raises(ApiError):
        Faults().add({"code": 409, "skip": -1})
