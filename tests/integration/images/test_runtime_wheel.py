"""The runtime package builds a wheel that installs into a clean venv and works there."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.slow


def _run(argv, **kwargs):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False,
                            **kwargs)
    assert result.returncode == 0, f"{argv}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def clean_venv(tmp_path_factory):
    """A fresh venv (no Ray, no vLLM) holding only the wheel built from the repo.

    The source is copied the way the Containerfiles COPY it (pyproject.toml and
    images/runtime only), so this also checks that the image's build context suffices,
    and the build leaves nothing behind in the work tree.
    """
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(REPO / "images" / "runtime", src / "images" / "runtime",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy2(REPO / "pyproject.toml", src / "pyproject.toml")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(work / "dist"),
          str(src)])
    wheels = list((work / "dist").glob("llmops_gpu_stack_runtime-*.whl"))
    assert len(wheels) == 1
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps",
          "--no-index", str(wheels[0])])
    return venv


def test_entry_points_are_declared_and_import(clean_venv):
    probe = textwrap.dedent("""
        import json, sys
        from importlib import metadata
        eps = metadata.distribution("llmops-gpu-stack-runtime").entry_points
        scripts = {ep.name: ep.value for ep in eps if ep.group == "console_scripts"}
        for ep in eps:
            ep.load()  # imports the module and resolves the attribute
        heavy = sorted(m for m in ("ray", "vllm", "torch") if m in sys.modules)
        print(json.dumps({"scripts": scripts, "heavy": heavy}))
    """)
    out = _run([str(clean_venv / "bin" / "python"), "-c", probe], cwd=clean_venv).stdout
    found = json.loads(out)
    assert found["scripts"]["gpu-stack-launch"] == "gpu_stack_runtime.launcher.cli:main"
    assert found["heavy"] == []  # the launcher imports without Ray, vLLM or torch


def test_console_script_runs_from_the_clean_venv(clean_venv, tmp_path):
    script = clean_venv / "bin" / "gpu-stack-launch"
    assert "check-args" in _run([str(script), "--help"], cwd=tmp_path).stdout
    missing = subprocess.run([str(script), "head", "--model-dir", str(tmp_path),
                              "--served-model-name", "tiny"], capture_output=True, text=True,
                             cwd=tmp_path, timeout=60, env={"POD_IP": "127.0.0.2"},
                             check=False)
    assert missing.returncode == 3 and "no completion marker" in missing.stderr


def test_the_wheel_holds_the_runtime_package_only(clean_venv):
    site = next((clean_venv / "lib").glob("python3*/site-packages"))
    package = site / "gpu_stack_runtime"
    assert (package / "launcher" / "cli.py").is_file()
    assert not (site / "tests").exists() and not (site / "plugins").exists()
