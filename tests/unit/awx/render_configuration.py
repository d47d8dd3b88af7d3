"""Render the controller configuration's awx.awx tasks and load their modules' specs.

Run as a script (``python render_configuration.py PLAYBOOK VARS_JSON``), in a process
of its own because it installs Ansible's collection loader: prints JSON with, for every
``awx.awx`` task and every loop item, the module's name and the parameters Ansible would
pass it (templated by Ansible's own Templar with the play's vars and vars_files), and
for every module used the keyword arguments its ``main()`` gives ``AnsibleModule``
(argument_spec, mutually_exclusive, required_if, ...), captured from the module file the
plugin loader resolves.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from unittest import mock

from ansible.module_utils import basic
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader, module_loader
from ansible.template import Templar

_NAMESPACE = "awx.awx."
_OMIT = "__omit_place_holder__gpu_stack_test"
_TASK_KEYS = {"name", "loop", "loop_control", "no_log", "when", "register", "tags",
              "vars", "changed_when", "failed_when"}


class _Captured(Exception):
    def __init__(self, kwargs):
        super().__init__("captured")
        self.kwargs = kwargs


def _capture(self, *args, **kwargs):
    raise _Captured(kwargs)


def module_kwargs(fqcn: str) -> tuple[str, dict]:
    """The path the plugin loader resolves for FQCN, and what main() gives AnsibleModule."""
    found = module_loader.find_plugin_with_context(fqcn)
    if not found.resolved:
        raise SystemExit(f"the plugin loader does not find {fqcn}")
    path = found.plugin_resolved_path
    dotted = "ansible_collections.awx.awx.plugins.modules." + Path(path).stem
    spec = importlib.util.spec_from_file_location(dotted, path)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    with mock.patch.object(basic.AnsibleModule, "__init__", _capture):
        try:
            loaded.main()
        except _Captured as captured:
            return path, captured.kwargs
    raise SystemExit(f"{fqcn}: main() never built its AnsibleModule")


def _drop_omitted(value):
    if isinstance(value, dict):
        return {key: _drop_omitted(item) for key, item in value.items() if item != _OMIT}
    if isinstance(value, list):
        return [_drop_omitted(item) for item in value if item != _OMIT]
    return value


def _plain(value):
    """Ansible's tagged values as plain JSON types."""
    if isinstance(value, dict):
        # an option's env fallback (a function) is not for an offline check
        return {str(key): _plain(item) for key, item in value.items() if key != "fallback"}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, bool) or value is None:
        return value
    for kind in (int, float, str):
        if isinstance(value, kind):
            return kind(value)
    raise TypeError(f"unexpected {type(value)}: {value!r}")


def render(playbook: Path, extra_vars: dict) -> list[dict]:
    loader = DataLoader()
    loader.set_basedir(str(playbook.parent))
    tasks = []
    for play in loader.load_from_file(str(playbook), trusted_as_template=True):
        variables = {}
        for name in play.get("vars_files", []):
            variables.update(loader.load_from_file(str(playbook.parent / name),
                                                   trusted_as_template=True))
        variables.update(play.get("vars", {}))
        variables.update(extra_vars)
        variables["omit"] = _OMIT
        for task in play.get("tasks", []):
            modules = [key for key in task if key not in _TASK_KEYS]
            if len(modules) != 1:
                raise SystemExit(f"task {task.get('name')!r}: modules {modules}")
            fqcn = modules[0]
            if not fqcn.startswith(_NAMESPACE):
                continue
            templar = Templar(loader=loader, variables=variables)
            items = templar.template(task["loop"]) if "loop" in task else [None]
            for item in items:
                item_templar = Templar(loader=loader, variables={**variables, "item": item})
                params = _drop_omitted(item_templar.template(task[fqcn]))
                tasks.append({"task": task["name"], "module": fqcn,
                              "no_log": bool(task.get("no_log")), "params": _plain(params)})
    return tasks


def main() -> None:
    init_plugin_loader()
    tasks = render(Path(sys.argv[1]), json.loads(sys.argv[2]))
    modules = {}
    for fqcn in sorted({task["module"] for task in tasks}):
        path, kwargs = module_kwargs(fqcn)
        modules[fqcn] = {"path": path, "kwargs": _plain(kwargs)}
    json.dump({"tasks": tasks, "modules": modules}, sys.stdout)


if __name__ == "__main__":
    main()
