"""Every command the collection runs in a pod is installed by that image's Containerfile.

The commands are read from what the collection really renders and runs: the RayCluster
containers of ``serving/render.py``, the stager Job of ``k8s/staging_job.py``, the
loader pod and the ``k8s_exec``/``k8s_cp`` calls of the roles (k8s_cp's own commands read
from the installed kubernetes.core), the launcher's children, and the validate role's
GPU command. What an image provides is read from its Containerfile: the final stage's
OS packages, the venv it copies (``python``), and the build stage's ``pip install``
(the runtime wheel's console scripts and ``python -m`` modules from ``pyproject.toml``,
Ray's and vLLM's). A command no install step provides fails the test.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.staging import ModelStaging
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan
from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.render import manifests
from gpu_stack_runtime.launcher import ray_cluster, vllm_args

from .containerfile import ALL, IMAGE_OF, REPO, RUNTIME, os_packages, pip_installs, stages

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# Commands of the distribution packages the Containerfiles install.
OS_COMMANDS = {"coreutils-single": {"sleep", "rm", "test", "cat", "mkdir", "ls"},
               "coreutils": {"sleep", "rm", "test", "cat", "mkdir", "ls"},
               "tar": {"tar"}}
# Console scripts and top-level modules of the third-party packages pip installs.
PIP_PROVIDES = {"ray": ({"ray"}, {"ray"}), "vllm": ({"vllm"}, {"vllm"})}
# Every base image (UBI 9, Ubuntu) has a POSIX shell: the launcher runs KubeRay's
# generated `ray start` line through it, as KubeRay itself would.
BASE_COMMANDS = {"/bin/sh"}


def _defaults(role: str) -> dict:
    return yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())


def _image_name(reference: str) -> str:
    return reference.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]


def _tasks(role: str, name: str) -> list[dict]:
    """The tasks of roles/<role>/tasks/<name>, blocks flattened."""
    out, todo = [], list(yaml.safe_load((REPO / "roles" / role / "tasks" / name).read_text()))
    while todo:
        task = todo.pop(0)
        todo += task.get("block", []) + task.get("always", []) + task.get("rescue", [])
        out.append(task)
    return out


def _k8s_cp_commands() -> set[str]:
    """What kubernetes.core.k8s_cp runs in the pod to copy files into it."""
    from ansible_collections.kubernetes import core
    text = (Path(core.__path__[0]) / "plugins" / "module_utils" / "copy.py").read_text()
    found = set(re.findall(r'\[\s*"(tar|test)"', text))
    assert found == {"tar", "test"}, f"kubernetes.core's k8s_cp changed: {found}"
    return found


def required() -> list[tuple[str, str, str]]:
    """(image name, command or ``-m module``, where it comes from)."""
    ray_image = _image_name(_defaults("ray_vllm")["ray_vllm_image"])
    runtime_image = _image_name(_defaults("model_storage")["model_storage_image"])
    out = []
    site = {"nodes": 8, "gpus_per_node": 2, "gpu_memory_gib": 40}
    plan = build_plan({"preset": "llama-3-70b"}, site)
    cfg = {"name": "llm", "namespace": "llm", "image": _defaults("ray_vllm")["ray_vllm_image"],
           "served_model_name": "m", "model_dir": "m", "pvc": "models",
           "api_key_secret": "llm-api-key", "service_account": "ray-vllm",
           "ray_version": "2.60.0", "shm_size": "1Gi", "startup_checks": 10,
           "route_timeout": "600s", "node_selector": {},
           "head_resources": {"cpu": "1", "memory": "1Gi"},
           "worker_resources": {"cpu": "1", "memory": "1Gi"}}
    for obj in manifests(plan, cfg):
        if obj["kind"] == "RayCluster":
            spec = obj["spec"]
            groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
            for group in groups:
                for container in group["template"]["spec"]["containers"]:
                    out.append((_image_name(container["image"]), container["command"][0],
                                f"render.py RayCluster {container['name']}"))
    staging = ModelStaging(None, "llm", {"name": "models"}, "org/model")
    job = next(o for o in staging.job_manifests({"type": "hub", "repo_id": "org/model"},
                                                _defaults("model_storage")["model_storage_image"],
                                                None, {}, {}) if o["kind"] == "Job")
    for container in job["spec"]["template"]["spec"]["containers"]:
        out.append((_image_name(container["image"]), container["command"][0],
                    "staging_job.py stager Job"))
    for task in _tasks("model_storage", "upload.yml"):
        pod = (task.get("kubernetes.core.k8s") or {}).get("definition") or {}
        for container in pod.get("spec", {}).get("containers", []):
            assert container["image"] == "{{ model_storage_image }}"
            out.append((runtime_image, container["command"][0], "model_storage loader pod"))
        if "kubernetes.core.k8s_exec" in task:
            word = shlex.split(task["kubernetes.core.k8s_exec"]["command"])[0]
            out.append((runtime_image, word, "model_storage k8s_exec"))
        if "kubernetes.core.k8s_cp" in task:
            out += [(runtime_image, cmd, "model_storage k8s_cp") for cmd in _k8s_cp_commands()]
    for task in _tasks("ray_vllm", "main.yml"):
        if "kubernetes.core.k8s_exec" in task:
            word = shlex.split(task["kubernetes.core.k8s_exec"]["command"])[0]
            out.append((ray_image, word, "ray_vllm k8s_exec"))
    gpu = shlex.split(_defaults("validate")["validate_gpu_command"])
    out.append((ray_image, gpu[0], "validate_gpu_command"))
    imported = re.search(r"import (\w+)", gpu[2]).group(1)
    out.append((ray_image, f"-m {imported}", "validate_gpu_command"))
    # the launcher's children (head: ray start, the GPU wait, vLLM)
    out.append((ray_image, Path(ray_cluster.ray_executable()).name, "launcher ray start"))
    cli = (REPO / "images/runtime/gpu_stack_runtime/launcher/cli.py").read_text()
    for module in re.findall(r'"-m", "([\w.]+)"', cli):
        out.append((ray_image, f"-m {module}", "launcher child"))
    out.append((ray_image, f"-m {vllm_args.VLLM_SERVER_MODULE}", "launcher vLLM"))
    out.append((ray_image, "/bin/sh", "launcher ray start through KubeRay's line"))
    return out


def _wheel() -> tuple[dict, set[str]]:
    """The runtime wheel's console scripts ({name: entry}) and its top-level packages."""
    scripts = PYPROJECT["project"]["scripts"]
    where = REPO / PYPROJECT["tool"]["setuptools"]["packages"]["find"]["where"][0]
    packages = {p.parent.name for p in where.glob("*/__init__.py")}
    return scripts, packages


def provided(text: str) -> set[str]:
    """Commands (and ``-m`` modules) the Containerfile's install steps put on PATH."""
    build, final = stages(text)[0], stages(text)[-1]
    out = set(BASE_COMMANDS)
    for package in os_packages(final):
        out |= OS_COMMANDS.get(package, set())
    copied = any(op == "COPY" and arg.startswith("--from=build /opt/venv") for op, arg in final)
    on_path = any(op == "ENV" and "PATH=/opt/venv/bin:" in arg for op, arg in final)
    made = any(op == "RUN" and re.search(r"-m venv /opt/venv\b", arg) for op, arg in build)
    if not (copied and on_path and made):
        return out
    out |= {"python", "python3"}
    scripts, packages = _wheel()
    extras = PYPROJECT["project"]["optional-dependencies"]
    for requirement in pip_installs(build):
        local = re.fullmatch(r"/src(?:\[([\w,]+)\])?", requirement)
        if local:
            chosen = set((local.group(1) or "").split(","))
            for name, entry in scripts.items():
                sub = entry.split(":")[0].split(".")[1]
                if extras.get(sub) and sub not in chosen:
                    continue  # its dependencies are in an extra this install leaves out
                out.add(name)
            out |= {f"-m {p}" for p in packages}
            continue
        name = re.match(r"[\w.-]+", requirement).group(0).lower()
        commands, modules = PIP_PROVIDES.get(name, (set(), set()))
        out |= commands | {f"-m {m}" for m in modules}
    return out


def missing(text: str, image: str, needs: list[tuple[str, str, str]]) -> list[str]:
    have = provided(text)
    out = []
    for name, command, where in needs:
        if name != image:
            continue
        key = f"-m {command[3:].split('.')[0]}" if command.startswith("-m ") else command
        if key not in have:
            out.append(f"{command} ({where})")
    return out


def test_the_images_of_the_pods_are_the_images_built_here():
    assert {name for name, _c, _w in required()} == set(IMAGE_OF.values())


def test_the_commands_the_collection_runs_are_the_expected_ones():
    """The reader finds every kind of command (so the next test checks something)."""
    commands = {(name, command) for name, command, _w in required()}
    assert {("gpu-stack-runtime", c) for c in ("gpu-stack-stage", "sleep", "rm", "tar", "test")}\
        <= commands
    assert {("ray-vllm", c) for c in ("gpu-stack-launch", "ray", "python", "-m vllm.entrypoints"
                                      ".openai.api_server")} <= commands


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_command_is_installed_by_the_containerfile(path):
    assert missing(path.read_text(), IMAGE_OF[path], required()) == []


@pytest.mark.parametrize(("old", "new", "reported"), [
    (" tar \\", " \\", "tar (model_storage k8s_cp)"),
    ('"/src[stager]"', '"/src"', "gpu-stack-stage (staging_job.py stager Job)"),
    ("ENV PATH=/opt/venv/bin:${PATH}", "ENV PATH=${PATH}", "gpu-stack-stage"),
])
def test_a_command_the_runtime_image_lost_is_reported(old, new, reported):
    text = RUNTIME.read_text()
    assert old in text
    problems = missing(text.replace(old, new, 1), "gpu-stack-runtime", required())
    assert any(p.startswith(reported) for p in problems), problems


def test_a_launcher_child_the_serving_image_lost_is_reported():
    path = next(p for p in ALL if p.name == "Containerfile.ubi9")
    text = path.read_text().replace('"vllm==${VLLM_VERSION}" ', "", 1)
    assert missing(text, "ray-vllm", required()) == [
        "-m vllm.entrypoints.openai.api_server (launcher vLLM)"]
