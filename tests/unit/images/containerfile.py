"""A small reader of Containerfiles for the image tests: instructions, stages, installs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
RUNTIME = REPO / "images" / "gpu-stack-runtime" / "Containerfile"
RAY_VLLM = sorted((REPO / "images" / "ray-vllm").glob("Containerfile.*"))
ALL = [RUNTIME, *RAY_VLLM]
# The image each Containerfile builds (the last path part of the defaults' references).
IMAGE_OF = {RUNTIME: "gpu-stack-runtime", **{path: "ray-vllm" for path in RAY_VLLM}}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            if current.strip():
                logical.append(current.strip())
            current = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in logical]


def stages(text: str) -> list[list[tuple[str, str]]]:
    """The instructions of each stage (what follows each FROM, the FROM included)."""
    out: list[list[tuple[str, str]]] = []
    for op, arg in instructions(text):
        if op == "FROM":
            out.append([])
        if out:
            out[-1].append((op, arg))
    return out


def _commands(stage: list[tuple[str, str]]) -> list[list[str]]:
    """Every shell command of the stage's RUN lines, split into words."""
    out = []
    for op, arg in stage:
        if op == "RUN":
            for part in re.split(r"&&|;|\|\|", arg):
                words = shlex.split(part)
                if words:
                    out.append(words)
    return out


def os_packages(stage: list[tuple[str, str]]) -> set[str]:
    """Packages the stage installs with microdnf, dnf or apt-get."""
    found = set()
    for words in _commands(stage):
        if words[0] in ("microdnf", "dnf", "apt-get") and "install" in words:
            found.update(w for w in words[words.index("install") + 1:] if not w.startswith("-"))
    return found


def pip_installs(stage: list[tuple[str, str]]) -> list[str]:
    """The requirements (or paths) the stage's ``pip install`` commands name."""
    found = []
    for words in _commands(stage):
        if words[0].endswith("pip") and "install" in words:
            found += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return found


def copies(text: str) -> list[str]:
    """The build-context sources of every COPY (not ``--from`` a stage)."""
    out = []
    for op, arg in instructions(text):
        words = arg.split()
        if op == "COPY" and not any(w.startswith("--from") for w in words):
            out += [w for w in words[:-1] if not w.startswith("--")]
    return out
