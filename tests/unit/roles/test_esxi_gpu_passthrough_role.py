"""The role's two statements of its defaults must agree (argument_specs vs defaults)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[3] / "roles" / "esxi_gpu_passthrough"


def test_defaults_match_argument_specs():
    spec = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    spec_defaults = {k: v["default"] for k, v in options.items() if "default" in v}
    assert defaults == spec_defaults
    assert all(k.startswith("esxi_gpu_") for k in options)
    assert options["esxi_gpu_vcenter"]["options"]["password"]["no_log"] is True
