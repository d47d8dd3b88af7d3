"""The AWX execution environment: ``ansible-builder create`` on images/ee/.

The EE definition keeps no list of its own: the build context ansible-builder writes must
hold exactly the install path's files (requirements.txt, bindep.txt,
collections/requirements.yml), this collection's tarball (whose own
meta/execution-environment.yml names the same files, which the builder's introspection
reads at build time), and the ansible-core and ansible-runner versions pyproject.toml's
``dev`` group pins. No container engine is needed: ``create`` only writes the context.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml

from .controller import MAIN_TOOLCHAIN_ONLY

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
EE_FILE = Path("images/ee/execution-environment.yml")
# the files the EE definition reads, relative to the repository root
_INSTALL_PATH_FILES = ("requirements.txt", "bindep.txt", "collections/requirements.yml")

pytestmark = MAIN_TOOLCHAIN_ONLY


def _lines(text: str) -> list[str]:
    """Non-comment, non-blank lines."""
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _dev_pin(name: str) -> str:
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["dependency-groups"]["dev"]
    pins = [entry for entry in dev if re.match(rf"{re.escape(name)}==", entry)]
    assert len(pins) == 1, f"pyproject.toml's dev group pins {name} {len(pins)} times"
    return pins[0]


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> Path:
    """The build context of the EE, created from a copy of the files it reads."""
    builder = BIN / "ansible-builder"
    if not builder.exists():
        pytest.fail("ansible-builder is not installed (pyproject.toml dev group)")
    root = tmp_path_factory.mktemp("ee")
    for name in (*_INSTALL_PATH_FILES, str(EE_FILE)):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, root / name)
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", str(REPO),
                    "--output-path", str(root / EE_FILE.parent / "collection")],
                   check=True, capture_output=True, text=True)
    # as images/ee/build.sh does: the requirements without the checkout's own `.` entry
    subprocess.run(["bash", str(REPO / EE_FILE.parent / "galaxy-requirements.sh"),
                    str(root / "collections/requirements.yml"),
                    str(root / EE_FILE.parent / "collection/requirements.yml")], check=True)
    ctx = root / "context"
    done = subprocess.run([str(builder), "create", "--file", str(root / EE_FILE),
                           "--context", str(ctx)], capture_output=True, text=True, cwd=root,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return ctx


def _containerfile(ctx: Path) -> str:
    return next(ctx / name for name in ("Containerfile", "Dockerfile")
                if (ctx / name).exists()).read_text()


def test_python_and_system_requirements_are_the_install_paths(context):
    assert _lines((context / "_build/requirements.txt").read_text()) == \
        _lines((REPO / "requirements.txt").read_text())
    assert _lines((context / "_build/bindep.txt").read_text()) == \
        _lines((REPO / "bindep.txt").read_text())


def test_dependency_collections_are_the_projects_requirements(context):
    built = yaml.safe_load((context / "_build/requirements.yml").read_text())
    ours = yaml.safe_load((REPO / "collections/requirements.yml").read_text())
    # all of them but the checkout itself (`.`, type dir: the EE installs its tarball)
    assert built["collections"] == [c for c in ours["collections"] if c.get("type") != "dir"]
    assert len(built["collections"]) == len(ours["collections"]) - 1
    # the tarball is installed with --no-deps: each dependency galaxy.yml declares must be
    # installed from requirements.yml, with the same bounds
    declared = yaml.safe_load((REPO / "galaxy.yml").read_text())["dependencies"]
    by_name = {entry["name"]: entry.get("version") for entry in built["collections"]}
    assert declared and all(by_name.get(name) == spec for name, spec in declared.items()), \
        (declared, by_name)


def test_the_collection_tarball_is_in_the_context_and_names_the_same_lists(context):
    tarballs = list((context / "_build/collection").glob("*.tar.gz"))
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    assert [path.name for path in tarballs] == [f"llmops-gpu_stack-{version}.tar.gz"]
    with tarfile.open(tarballs[0]) as tar:
        manifest = json.load(tar.extractfile("MANIFEST.json"))["collection_info"]
        ee_meta = yaml.safe_load(tar.extractfile("meta/execution-environment.yml"))
        shipped = {name: tar.extractfile(name).read().decode()
                   for name in (ee_meta["dependencies"]["python"],
                                ee_meta["dependencies"]["system"])}
    assert (manifest["namespace"], manifest["name"]) == ("llmops", "gpu_stack")
    assert shipped == {"requirements.txt": (REPO / "requirements.txt").read_text(),
                       "bindep.txt": (REPO / "bindep.txt").read_text()}


def test_ansible_core_and_runner_are_the_dev_pins(context):
    refs = re.search(r'^ARG ANSIBLE_INSTALL_REFS="([^"]*)"', _containerfile(context), re.M)
    assert refs, "no ANSIBLE_INSTALL_REFS in the generated Containerfile"
    assert refs.group(1).split() == [_dev_pin("ansible-core"), _dev_pin("ansible-runner")]


def test_the_collection_is_installed_before_introspection(context):
    steps = _containerfile(context)
    install = steps.find("/build/collection/llmops-gpu_stack-")
    galaxy_stage = steps.find("AS galaxy")
    introspect = steps.find("introspect.py introspect")
    assert 0 <= galaxy_stage < install < introspect, steps


def test_the_controller_configuration_names_the_image_build_sh_tags():
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    built = re.search(r'^TAG="([^:"]+):\$\(', (REPO / "images/ee/build.sh").read_text(), re.M)
    assert built, "images/ee/build.sh sets no default TAG"
    image = re.search(r"^gpu_stack_awx_ee_image: (\S+)$",
                      (REPO / "playbooks/awx/vars/controller.yml").read_text(), re.M)
    assert image and image.group(1) == f"{built.group(1)}:{version}"
