"""images/build.sh tags exactly what the defaults reference (read by its --dry-run)."""

from __future__ import annotations

import ast
import shlex
import subprocess

import yaml

from .containerfile import REPO, RUNTIME, instructions

SCRIPT = REPO / "images" / "build.sh"


def _dry_run(*args: str) -> list[list[str]]:
    result = subprocess.run(["bash", str(SCRIPT), "--dry-run", *args], capture_output=True,
                            text=True, timeout=60, check=False, cwd="/")
    assert result.returncode == 0, result.stderr
    return [shlex.split(line) for line in result.stdout.splitlines()]


def _builds(lines: list[list[str]]) -> dict[str, list[str]]:
    """{Containerfile: its -t tags} of the build commands."""
    out = {}
    for words in lines:
        if words[:2] in (["podman", "build"], ["buildah", "bud"]):
            out[words[words.index("-f") + 1]] = [words[i + 1] for i, w in enumerate(words)
                                                 if w == "-t"]
            assert words[-1] == "." and "--ignorefile" in words
    return out


def _role_default(role: str, name: str) -> str:
    return yaml.safe_load((REPO / f"roles/{role}/defaults/main.yml").read_text())[name]


def _module_doc_default(module: str, option: str) -> str | None:
    tree = ast.parse((REPO / f"plugins/modules/{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "DOCUMENTATION":
            return yaml.safe_load(ast.literal_eval(node.value))["options"][option].get("default")
    return None


def test_the_builds_are_tagged_with_the_references_of_the_defaults():
    runtime = _role_default("model_storage", "model_storage_image")
    ray_vllm = _role_default("ray_vllm", "ray_vllm_image")
    assert _module_doc_default("model_stage", "image") == runtime
    builds = _builds(_dry_run())
    assert builds == {
        "images/gpu-stack-runtime/Containerfile": [runtime],
        "images/ray-vllm/Containerfile.ubi9": [ray_vllm, f"{ray_vllm}-ubi9"],
        "images/ray-vllm/Containerfile.ubuntu": [f"{ray_vllm}-ubuntu"],
        "images/gateway/Containerfile": [_role_default("llm_gateway", "llm_gateway_image")],
    }
    for path in builds:
        assert (REPO / path).is_file()


def test_the_runtime_build_passes_its_tag_as_the_version_the_build_checks():
    (words,) = _dry_run("gpu-stack-runtime")
    arg = words[words.index("--build-arg") + 1]
    tag = _role_default("model_storage", "model_storage_image").rsplit(":", 1)[1]
    assert arg == f"RUNTIME_VERSION={tag}"
    declared = dict(a.split("=", 1) for op, a in instructions(RUNTIME.read_text())
                    if op == "ARG" and "=" in a)
    assert declared["RUNTIME_VERSION"] == tag


def test_push_moves_every_tag_to_the_registry_and_pushes_it():
    lines = _dry_run("--push", "registry.example.com/team/", "--engine", "buildah")
    builds = _builds(lines)
    tags = [tag for found in builds.values() for tag in found]
    names = {ref.rsplit("/", 1)[1] for ref in (_role_default("model_storage",
                                                             "model_storage_image"),
                                               _role_default("ray_vllm", "ray_vllm_image"),
                                               _role_default("llm_gateway", "llm_gateway_image"))}
    assert all(t.startswith("registry.example.com/team/") for t in tags) and len(tags) == 5
    assert names <= {t.rsplit("/", 1)[1] for t in tags}
    pushed = [w[2] for w in lines if w[:2] == ["buildah", "push"]]
    assert pushed == tags
    assert ["model_storage_image:", f"registry.example.com/team/{sorted(names)[0]}"] in lines


def test_bad_input_is_refused_before_anything_runs():
    for args in (["nonsense-image"], ["--engine", "kaniko"], ["--push"]):
        result = subprocess.run(["bash", str(SCRIPT), "--dry-run", *args], capture_output=True,
                                text=True, timeout=60, check=False)
        assert result.returncode != 0 and result.stdout == "", args
