"""The integration tests' one way to run Ansible: ``ansible-playbook`` in a subprocess, as
a user runs it, with this venv's Python and this repository's collections.

- ``run_playbook(tmp_path, tasks)`` writes the tasks as a play on localhost; or pass
  ``playbook=`` (a file of ``playbooks/``) and ``inventory=``.
- The environment is hermetic: none of the caller's ``ANSIBLE_*``, ``K8S_AUTH_*`` or
  ``VMWARE_*``; what a test needs (credentials, ``GPU_LAB_HOME``) goes in ``env``.
- With ``json_out`` the ``ansible.posix.json`` callback gives the per-task results of the
  host; ``stats`` the play recap.

The result unpacks as ``rc, results, output`` (output: stdout and stderr together).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
_CALLER_PREFIXES = ("ANSIBLE_", "K8S_AUTH_", "VMWARE_")


def lab_first_model() -> dict:
    """``gpu_stack_models`` of the lab inventory cut to its first model (tiny-llama on
    Ray, TP 2 x PP 2), as extra vars: tests of one model through the lab inventory pass
    them. A one-entry list is served in the single-model form, under the release
    ``ray_vllm_name`` (``llm``), where the validate stage is pointed too."""
    models = yaml.safe_load((REPO / "inventories" / "lab" / "group_vars" / "all" /
                             "models.yml").read_text())["gpu_stack_models"]
    return {"gpu_stack_models": models[:1], "validate_serving_name": "llm"}


@dataclass(frozen=True)
class PlayRun:
    rc: int
    results: list[dict[str, Any]]
    output: str
    stdout: str = field(repr=False)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.rc, self.results, self.output))

    @property
    def stats(self) -> dict[str, Any]:
        """The recap of a ``json_out`` run: {host: {"changed": n, "failures": n, ...}}."""
        return json.loads(self.stdout)["stats"]


def base_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment without the caller's Ansible, Kubernetes and vSphere
    settings, plus this repository's collections and ``env``."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(_CALLER_PREFIXES)}
    out.update(ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    out.update(env or {})
    return out


def _write(tmp_path: Path, stem: str, data: Any) -> Path:
    index = len(list(tmp_path.glob(f"{stem}-*.yml")))
    path = tmp_path / f"{stem}-{index}.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _task_results(stdout: str, host: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(stdout)
        return [t["hosts"][host] for p in data["plays"] for t in p["tasks"] if host in t["hosts"]]
    except (ValueError, KeyError, TypeError):
        return []


def run_playbook(tmp_path: Path, tasks: list | None = None, *, playbook: Path | None = None,
                 inventory: str = "localhost,", local: bool = True, extra: tuple = (),
                 env: Mapping[str, str] | None = None, json_out: bool = True,
                 vars_file: dict | None = None, timeout: float = 900) -> PlayRun:
    """Run ``tasks`` (a play on localhost) or ``playbook``; return (rc, results, output).

    local: ``-c local`` and this venv's Python as the interpreter (the task plays; a
    playbook with its own inventory passes False). extra: more command-line arguments
    (``--check``, ``--tags``, ``-vvv``). vars_file: extra vars written to a file and
    passed as ``-e @file`` (kept out of the command line and its process listing)."""
    if playbook is None:
        playbook = _write(tmp_path, "play",
                          [{"hosts": "localhost", "gather_facts": False, "tasks": tasks}])
    cmd = [ANSIBLE_PLAYBOOK, "-i", inventory, str(playbook)]
    if local:
        cmd += ["-c", "local", "-e", f"ansible_python_interpreter={sys.executable}"]
    if vars_file is not None:
        cmd += ["-e", f"@{_write(tmp_path, 'vars', vars_file)}"]
    cmd += list(extra)
    run_env = base_env(env)
    if json_out:
        run_env.setdefault("ANSIBLE_STDOUT_CALLBACK", "ansible.posix.json")
    proc = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=timeout,
                          check=False, cwd=REPO)
    results = _task_results(proc.stdout, "localhost") if json_out else []
    return PlayRun(proc.returncode, results, proc.stdout + proc.stderr, proc.stdout)


def run_module(tmp_path: Path, module: str, args: dict, **kwargs: Any):
    """One call of ``llmops.gpu_stack.<module>``; (rc, its result, output)."""
    task = {"name": module, f"llmops.gpu_stack.{module}": args}
    rc, results, out = run_playbook(tmp_path, [task], **kwargs)
    return rc, (results[0] if results else {}), out
