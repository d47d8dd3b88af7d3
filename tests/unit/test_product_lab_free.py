"""The product knows nothing of the lab (issue 13, build point 1).

No file of the product (plugins/, roles/, images/) names the lab's switches, variables,
environment or package: ``lab_override``, ``GPU_STACK_LAB*``, ``gpu_stack_lab*``,
``gpu_lab``, ``GPU_LAB*``, ``gpu-lab``. The lab arranges what it needs itself
(tests/lab/README.md, "vLLM on CPU"). The lab-only plays (playbooks/lab.yml,
lab_done.yml) may name it, and do nothing unless the inventory says it is the lab.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PRODUCT_DIRS = ("plugins", "roles", "images")
LAB_NAMES = re.compile(r"lab_override|gpu_stack_lab|gpu[_-]lab", re.IGNORECASE)
_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache"}
LAB_ONLY_PLAYS = ("lab.yml", "lab_done.yml")


def lab_mentions(root: Path, dirs: tuple[str, ...] = PRODUCT_DIRS) -> list[str]:
    """``path:line: text`` for every line under root/dirs naming the lab."""
    found = []
    for top in dirs:
        for path in sorted((root / top).rglob("*")):
            rel = path.relative_to(root)
            if (not path.is_file() or _SKIP_DIRS.intersection(rel.parts)
                    or any(p.endswith(".egg-info") for p in rel.parts)):
                continue
            text = path.read_bytes().decode("utf-8", errors="replace")
            for number, line in enumerate(text.splitlines(), start=1):
                if LAB_NAMES.search(line):
                    found.append(f"{rel}:{number}: {line.strip()[:120]}")
    return found


def test_the_product_names_no_lab():
    assert [d for d in PRODUCT_DIRS if (REPO / d).is_dir()] == list(PRODUCT_DIRS)
    assert lab_mentions(REPO) == []


@pytest.mark.parametrize(("path", "line"), [
    ("plugins/modules/m.py", "    lab_override=dict(type='bool'),"),
    ("plugins/module_utils/serving/render.py", 'env["GPU_STACK_LAB_OVERRIDE"] = "1"'),
    ("roles/r/defaults/main.yml", "r_home: '{{ gpu_stack_lab_home }}'"),
    ("images/runtime/pkg/x.py", "from gpu_lab.controllers import kubelet"),
    ("images/ray-vllm/Containerfile.ubi9", "ENV GPU_LAB_HOME=/lab"),
    ("roles/r/tasks/main.yml", "  cmd: gpu-lab up"),
])
def test_the_checker_finds_a_planted_mention(tmp_path, path, line):
    for top in PRODUCT_DIRS:
        (tmp_path / top).mkdir()
    (tmp_path / "plugins" / "clean.py").write_text("labels = {'app': 'llm'}  # a label\n")
    planted = tmp_path / path
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_text(f"# first line\n{line}\n")
    assert lab_mentions(tmp_path) == [f"{path}:2: {line.strip()}"]


def test_the_checker_skips_caches_but_not_other_binaries(tmp_path):
    for top in PRODUCT_DIRS:
        (tmp_path / top).mkdir()
    cache = tmp_path / "plugins" / "__pycache__"
    cache.mkdir()
    (cache / "m.cpython-311.pyc").write_bytes(b"\x00gpu_lab\x00")
    (tmp_path / "images" / "blob.bin").write_bytes(b"\xff\x00GPU_STACK_LAB_OVERRIDE\x00")
    assert [m.split(":", 1)[0] for m in lab_mentions(tmp_path)] == ["images/blob.bin"]


def _tasks(play_file: Path) -> list[dict]:
    return [task for play in yaml.safe_load(play_file.read_text())
            for task in play.get("tasks", [])]


def test_the_lab_plays_do_nothing_off_the_lab():
    """site.yml imports the lab-only plays; every task of theirs is guarded by the
    inventory's ``gpu_stack_lab``, which only the lab inventory sets."""
    site = yaml.safe_load((REPO / "playbooks" / "site.yml").read_text())
    imported = {Path(step["ansible.builtin.import_playbook"]).name for step in site}
    assert set(LAB_ONLY_PLAYS) <= imported
    for name in LAB_ONLY_PLAYS:
        tasks = _tasks(REPO / "playbooks" / name)
        assert tasks
        for task in tasks:
            assert "gpu_stack_lab | default(false) | bool" in str(task.get("when")), (
                name, task.get("name"))
    lab_only = {f"playbooks/{name}" for name in LAB_ONLY_PLAYS}
    assert [m for m in lab_mentions(REPO, ("playbooks",))
            if m.split(":", 1)[0] not in lab_only] == []


def test_only_the_lab_inventory_says_it_is_the_lab():
    lab_vars = yaml.safe_load((REPO / "inventories/lab/group_vars/all/lab.yml").read_text())
    assert lab_vars["gpu_stack_lab"] is True
    others = [p for p in (REPO / "inventories").rglob("*")
              if p.is_file() and "lab" not in p.relative_to(REPO / "inventories").parts[:1]]
    assert others
    assert [p for p in others if "gpu_stack_lab" in p.read_text()] == []
