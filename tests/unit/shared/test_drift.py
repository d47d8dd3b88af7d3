"""Facts written once: the shared copies are byte-identical, every version agrees with
versions.py, and the checkers report a drift planted in a copy of the repository."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from unit.shared.drift import (
    COMMON,
    RUNTIME_COMMON,
    SHARED,
    copy_drift,
    load_versions,
    version_drift,
)

REPO = Path(__file__).resolve().parents[3]
_FILES = (
    "pyproject.toml",
    "plugins/modules/ray_vllm_cluster.py",
    "plugins/modules/model_stage.py",
    "images/runtime/gpu_stack_runtime/__init__.py",
    "images/ray-vllm/README.md",
    "images/ray-vllm/Containerfile.ubi9",
    "images/ray-vllm/Containerfile.ubuntu",
    "images/gpu-stack-runtime/Containerfile",
    "images/gateway/Containerfile",
    "images/README.md",
    *(f"roles/{role}/{part}" for role in ("ray_vllm", "model_storage", "gpu_operators",
                                          "llm_gateway")
      for part in ("defaults/main.yml", "meta/argument_specs.yml")),
    *(f"{COMMON}/{name}" for name in (*SHARED, "versions.py")),
    *(f"{RUNTIME_COMMON}/{name}" for name in SHARED),
)


@pytest.fixture
def tree(tmp_path):
    for rel in _FILES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, tmp_path / rel)
    return tmp_path


def _plant(root: Path, rel: str, old: str, new: str) -> None:
    path = root / rel
    text = path.read_text()
    assert old in text, f"{old!r} is no longer in {rel}: update this test"
    path.write_text(text.replace(old, new, 1))


def test_the_repository_has_no_copy_drift():
    assert copy_drift(REPO) == []


def test_the_repository_has_no_version_drift():
    assert version_drift(REPO) == []


def test_a_copy_is_clean_before_anything_is_planted(tree):
    assert copy_drift(tree) == [] and version_drift(tree) == []


@pytest.mark.parametrize("name", SHARED)
def test_one_changed_byte_in_a_runtime_copy_is_reported(tree, name):
    copy = tree / RUNTIME_COMMON / name
    data = bytearray(copy.read_bytes())
    data[-2] = ord(" ") if data[-2] != ord(" ") else ord("x")
    copy.write_bytes(bytes(data))
    problems = copy_drift(tree)
    assert len(problems) == 1 and f"{RUNTIME_COMMON}/{name} differs" in problems[0]
    assert f"byte {len(data) - 2}" in problems[0]


def test_a_missing_runtime_copy_is_reported(tree):
    (tree / RUNTIME_COMMON / "wait.py").unlink()
    assert copy_drift(tree) == [f"{COMMON}/wait.py or {RUNTIME_COMMON}/wait.py is missing"]


V = load_versions(REPO)
_OPS = V.OPERATORS
# (file, text naming the version today, the same text with another version, reported)
_PLANTED = [
    ("images/gateway/Containerfile", f"ARG LITELLM_VERSION={V.LITELLM}",
     "ARG LITELLM_VERSION=0.0.1", "images/gateway/Containerfile ARG LITELLM_VERSION"),
    ("pyproject.toml", f'"litellm[proxy]=={V.LITELLM}"', '"litellm[proxy]==0.0.1"',
     "pyproject.toml gateway litellm"),
    ("roles/llm_gateway/defaults/main.yml", f"{V.GATEWAY_IMAGE}:{V.GATEWAY_IMAGE_TAG}",
     f"{V.GATEWAY_IMAGE}:0.0.1", "roles/llm_gateway/defaults/main.yml llm_gateway_image"),
    ("roles/ray_vllm/defaults/main.yml", f"ray_vllm_ray_version: {V.RAY}",
     "ray_vllm_ray_version: 0.0.1", "roles/ray_vllm/defaults/main.yml ray_vllm_ray_version"),
    ("roles/ray_vllm/meta/argument_specs.yml", f"default: {V.RAY}", "default: 0.0.1",
     "roles/ray_vllm/meta/argument_specs.yml ray_vllm_ray_version"),
    ("roles/ray_vllm/defaults/main.yml", f"{V.RAY_VLLM_IMAGE}:{V.RAY_VLLM_IMAGE_TAG}",
     f"{V.RAY_VLLM_IMAGE}:0.0.1", "roles/ray_vllm/defaults/main.yml ray_vllm_image"),
    ("roles/model_storage/meta/argument_specs.yml", f"{V.RUNTIME_IMAGE}:{V.RUNTIME_IMAGE_TAG}",
     f"{V.RUNTIME_IMAGE}:latest", "roles/model_storage/meta/argument_specs.yml"),
    ("roles/gpu_operators/defaults/main.yml", _OPS["kuberay"]["starting_csv"],
     "kuberay-operator.v0.0.1", "gpu_operators_kuberay.starting_csv"),
    ("roles/gpu_operators/meta/argument_specs.yml", _OPS["gpu_operator"]["starting_csv"],
     "gpu-operator-certified.v0.0.1", "gpu_operators_gpu_operator.starting_csv"),
    ("plugins/modules/ray_vllm_cluster.py", f'"default": "{V.RAY}"', '"default": "0.0.1"',
     "ray_vllm_cluster.py argument spec ray_version"),
    ("plugins/modules/ray_vllm_cluster.py", f"default: {V.RAY}", "default: 0.0.1",
     "ray_vllm_cluster.py DOCUMENTATION ray_version"),
    ("plugins/modules/model_stage.py", f'{V.RUNTIME_IMAGE}:{V.RUNTIME_IMAGE_TAG}"',
     f'{V.RUNTIME_IMAGE}:0.0.1"', "model_stage.py argument spec image"),
    ("images/ray-vllm/Containerfile.ubuntu", f"ARG RAY_VERSION={V.RAY}", "ARG RAY_VERSION=0.0.1",
     "Containerfile.ubuntu ARG RAY_VERSION"),
    ("images/ray-vllm/Containerfile.ubi9", f"ARG VLLM_VERSION={V.VLLM}",
     "ARG VLLM_VERSION=0.0.1", "Containerfile.ubi9 ARG VLLM_VERSION"),
    ("images/ray-vllm/Containerfile.ubi9", f"cuda:{V.CUDA}-base", "cuda:0.0.1-base",
     "Containerfile.ubi9 ARG CUDA_IMAGE"),
    ("pyproject.toml", f'"ray=={V.RAY}"', '"ray==0.0.1"', "pyproject.toml serving ray"),
    ("pyproject.toml", f'version = "{V.RUNTIME}"', 'version = "0.0.1"', "[project].version"),
    ("images/runtime/gpu_stack_runtime/__init__.py", f'"{V.RUNTIME}"', '"0.0.1"',
     "__version__"),
    ("images/ray-vllm/README.md", f"ray[cgraph,default]=={V.RAY}",
     "ray[cgraph,default]==0.0.1", "images/ray-vllm/README.md:"),
    ("images/ray-vllm/Containerfile.ubuntu", f"# Versions: vLLM {V.VLLM}",
     "# Versions: vLLM 0.0.1", "Containerfile.ubuntu:"),
    ("images/gpu-stack-runtime/Containerfile", f"ARG RUNTIME_VERSION={V.RUNTIME}",
     "ARG RUNTIME_VERSION=0.0.1", "gpu-stack-runtime/Containerfile ARG RUNTIME_VERSION"),
    ("images/README.md", f"gpu-stack-runtime:{V.RUNTIME_IMAGE_TAG}",
     "gpu-stack-runtime:0.0.1", "images/README.md:"),
]


@pytest.mark.parametrize(("rel", "old", "new", "reported"), _PLANTED,
                         ids=[f"{p[0].rsplit('/', 1)[-1]}:{p[1]}" for p in _PLANTED])
def test_a_planted_version_drift_is_reported(tree, rel, old, new, reported):
    _plant(tree, rel, old, new)
    problems = version_drift(tree)
    assert len(problems) == 1, problems
    assert reported in problems[0]


def test_a_renamed_role_option_is_reported_not_skipped(tree):
    _plant(tree, "roles/ray_vllm/defaults/main.yml", "ray_vllm_ray_version:",
           "ray_vllm_ray_release:")
    problems = version_drift(tree)
    assert len(problems) == 1
    assert problems[0].startswith("roles/ray_vllm/defaults/main.yml ray_vllm_ray_version: "
                                  "not found")


def test_changing_the_source_alone_reports_every_place_that_names_it(tree):
    _plant(tree, f"{COMMON}/versions.py", f'RAY = "{V.RAY}"', 'RAY = "0.0.1"')
    problems = version_drift(tree)
    structured = [p for p in problems if "(RAY)" not in p]
    assert len(structured) == 7, problems  # module x2, role x2, Containerfile x2, pyproject
    assert len(problems) > 7  # and the README and the Containerfile comments
    assert all("'0.0.1'" in p for p in problems)


def test_a_dict_option_typed_with_nested_options_is_read_too(tree):
    """Role options may carry their defaults per sub-option (``options:``) instead."""
    path = tree / "roles/gpu_operators/meta/argument_specs.yml"
    specs = yaml.safe_load(path.read_text())
    option = specs["argument_specs"]["main"]["options"]["gpu_operators_kuberay"]
    pins = option.pop("default")
    option["options"] = {key: {"type": "str", "default": value} for key, value in pins.items()}
    path.write_text(yaml.safe_dump(specs))
    assert version_drift(tree) == []
    option["options"]["starting_csv"]["default"] = "kuberay-operator.v0.0.1"
    path.write_text(yaml.safe_dump(specs))
    problems = version_drift(tree)
    assert len(problems) == 1 and "gpu_operators_kuberay.starting_csv" in problems[0]
