"""requirements.txt is what the modules import on the controller, bounded from the pins.

- Every third-party package that plugins/ imports (stdlib, ansible and the collections
  aside) is provided by a line of requirements.txt, directly or as the dependency of one
  (urllib3 comes with kubernetes, httpx2 with openai).
- Each line's lower bound is the version pyproject.toml pins for the venv CI tests with,
  and its upper bound is above it: a bump of a pin fails here until requirements.txt
  follows.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# import name -> the requirements.txt line that provides it
PROVIDED_BY = {
    "pyVmomi": "pyvmomi", "pyVim": "pyvmomi",
    "kubernetes": "kubernetes", "urllib3": "kubernetes", "yaml": "PyYAML",
    "openai": "openai", "httpx2": "openai",
    "matplotlib": "matplotlib",
}
_LINE = re.compile(r"^([A-Za-z0-9_.-]+)>=([0-9][0-9.]*),<([0-9][0-9.]*)$")


def requirements() -> dict[str, tuple[str, str]]:
    """{name: (lower, upper)} of requirements.txt; any other line shape is an error."""
    found = {}
    for raw in (REPO / "requirements.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            match = _LINE.match(line)
            assert match, f"requirements.txt: {raw!r} is not 'name>=lower,<upper'"
            found[match.group(1)] = (match.group(2), match.group(3))
    return found


def third_party_imports() -> set[str]:
    found = set()
    for path in (REPO / "plugins").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in (
                        "__future__", "ansible", "ansible_collections"):
                    found.add(top)
    return found


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_every_imported_package_is_in_requirements():
    imports = third_party_imports()
    assert {"pyVmomi", "kubernetes", "openai", "matplotlib"} <= imports  # the scan works
    unknown = sorted(imports - set(PROVIDED_BY))
    assert not unknown, f"plugins/ imports {unknown}: add them to requirements.txt"
    missing = sorted({PROVIDED_BY[i] for i in imports} - set(requirements()))
    assert not missing, f"requirements.txt lacks {missing}"


def test_lower_bounds_are_the_tested_pins():
    groups = tomllib.loads((REPO / "pyproject.toml").read_text())["dependency-groups"]
    pins = {}
    for group in ("dev", "serving", "lab"):
        for dep in groups[group]:
            if isinstance(dep, str) and "==" in dep:
                name, version = dep.split("==")
                pins.setdefault(name.lower(), version)
    for name, (lower, upper) in requirements().items():
        assert name.lower() in pins, f"{name} is not pinned in pyproject.toml"
        assert lower == pins[name.lower()], f"{name}: >={lower}, but CI tests {pins[name.lower()]}"
        assert _version(lower) < _version(upper), f"{name}: empty range"
