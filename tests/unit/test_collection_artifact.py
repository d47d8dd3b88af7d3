"""The collection artifact: ``ansible-galaxy collection build`` of this working tree.

The tarball must ship the collection (plugins, roles, playbooks, meta) and nothing of the
test bed or the machine: no lab (``tests/lab``, ``.lab``), no virtual environment, no
egg-info, no byte code, no build output. The working tree is built as it is (with its
``.venv`` and the runtime package's egg-info present), which is stricter than a clean
clone. The size is printed and must match the figure README.md gives.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GALAXY = Path(sys.executable).with_name("ansible-galaxy")

# a member is forbidden when one of its path segments matches (or, for the lab, the path
# starts with the prefix)
_FORBIDDEN_PREFIXES = ("tests/lab/", "tests/output/", "collections/ansible_collections/")
_FORBIDDEN_SEGMENT = re.compile(
    r"^(\.venv.*|\.lab|\.git|\.cache|\.pytest_cache|\.ruff_cache|\.ansible|__pycache__|"
    r".*\.egg-info|build|dist|.*\.pyc|.*\.tar\.gz)$")
_REQUIRED = ("MANIFEST.json", "FILES.json", "meta/runtime.yml", "README.md",
             "plugins/modules/ray_vllm_cluster.py", "roles/validate/meta/argument_specs.yml",
             "playbooks/site.yml")


def forbidden(members: list[str]) -> list[str]:
    """The members that must not be in the artifact."""
    bad = []
    for name in members:
        path = name.removeprefix("./")
        if (path + "/").startswith(_FORBIDDEN_PREFIXES) or any(
                _FORBIDDEN_SEGMENT.match(part) for part in path.split("/")):
            bad.append(path)
    return bad


def test_forbidden_catches_the_test_bed_and_the_machine():
    members = ["plugins/modules/x.py", "tests/lab", "tests/lab/gpu_lab/cli.py",
               ".venv-py312/bin/python", "images/runtime/pkg.egg-info/PKG-INFO",
               "plugins/__pycache__/a.cpython-311.pyc", "tests/labels.py", "roles/build_x/a"]
    assert forbidden(members) == ["tests/lab", "tests/lab/gpu_lab/cli.py",
                                  ".venv-py312/bin/python",
                                  "images/runtime/pkg.egg-info/PKG-INFO",
                                  "plugins/__pycache__/a.cpython-311.pyc"]


def _readme_kib() -> int:
    found = re.search(r"collection\s+artifact\W+about\s+(\d+)\s+KiB",
                      (REPO / "README.md").read_text())
    assert found, "README.md gives no 'collection artifact ... about N KiB' line"
    return int(found.group(1))


@pytest.mark.skipif(not GALAXY.exists(), reason="ansible-galaxy not in this venv")
def test_built_artifact_holds_no_lab_venv_or_egg_info(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_HOME=str(tmp_path / "home"))
    done = subprocess.run([str(GALAXY), "collection", "build", "--output-path", str(tmp_path),
                           str(REPO)], capture_output=True, text=True, timeout=300,
                          check=False, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    (tarball,) = tmp_path.glob("llmops-gpu_stack-*.tar.gz")
    with tarfile.open(tarball) as archive:
        members = archive.getnames()
    assert forbidden(members) == []
    names = {m.removeprefix("./") for m in members}
    assert set(_REQUIRED) <= names, sorted(set(_REQUIRED) - names)
    kib = tarball.stat().st_size / 1024
    print(f"\n{tarball.name}: {len(members)} members, {kib:.0f} KiB")
    stated = _readme_kib()
    assert 0.75 * stated <= kib <= 1.25 * stated, (
        f"the artifact is {kib:.0f} KiB, README.md says about {stated} KiB: update README.md")
