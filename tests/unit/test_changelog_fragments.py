"""Changelog fragments as antsibull-changelog reads them (changelogs/config.yaml).

Each fragment is a YAML mapping of the configured sections to lists of strings. New
modules and plugins are never announced in a fragment: antsibull-changelog lists them
itself from their ``version_added`` at release time.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIG = yaml.safe_load((REPO / "changelogs" / "config.yaml").read_text())
SECTIONS = {s[0] for s in CONFIG["sections"]} | {CONFIG["prelude_section_name"],
                                                 CONFIG["trivial_section_name"]}
FRAGMENTS = sorted((REPO / "changelogs" / "fragments").glob("*"))
_ANNOUNCE = re.compile(r"\bnew (modules?|plugins?)\b", re.IGNORECASE)


def problems(fragment: dict) -> list[str]:
    """What antsibull-changelog would refuse or what re-announces a new module."""
    if not isinstance(fragment, dict) or not fragment:
        return ["not a mapping of sections"]
    found = []
    for section, entries in fragment.items():
        if section not in SECTIONS:
            found.append(f"unknown section {section!r}")
            continue
        if section == CONFIG["prelude_section_name"]:
            entries = [entries]
        if not isinstance(entries, list) or not entries:
            found.append(f"{section}: not a list of entries")
            continue
        for entry in entries:
            if not isinstance(entry, str) or not entry.strip():
                found.append(f"{section}: an entry that is not a sentence: {entry!r}")
            elif _ANNOUNCE.search(entry):
                found.append(f"{section}: announces a new module or plugin: {entry[:60]}...")
    return found


def test_the_checker_finds_what_antsibull_refuses():
    assert problems({"major_changes": ["esxi_gpu_info - new module for GPUs."]}) == [
        "major_changes: announces a new module or plugin: esxi_gpu_info - new module for GPUs...."]
    assert problems({"features": ["x"]}) == ["unknown section 'features'"]
    assert problems({"bugfixes": "x"}) == ["bugfixes: not a list of entries"]
    assert problems({"major_changes": ["a, b - New modules to label nodes."]}) != []
    assert problems({"minor_changes": ["model_stage - resumes partial files."]}) == []


@pytest.mark.parametrize("path", FRAGMENTS, ids=[p.name for p in FRAGMENTS])
def test_fragment_is_what_antsibull_changelog_expects(path):
    assert path.suffix in (".yml", ".yaml"), f"{path.name}: fragments are YAML files"
    assert problems(yaml.safe_load(path.read_text())) == []
