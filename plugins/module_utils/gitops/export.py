# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The gitops_export runner: ``run(request) -> result``.

Render every stage (``stages.RENDERERS``: the modules' own rendering functions), lay
the objects out as a kustomize base and the inventory's overlay (``tree``), stand in
for Secrets without their values (``secrets``), add the Argo CD Application
(``argocd``), then write only the files whose text changes (``files``; nothing in check
mode). Every input is checked and every object rendered before the first write.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.gitops import (
    argocd,
    files,
    secrets,
    stages,
    tree,
)


@dataclass
class Request:
    dest: str
    inventory: str
    stages: dict  # stage -> the values its role passes its module
    base: dict = field(default_factory=dict)  # stage -> the collection's default values
    application: dict | None = None
    secrets: dict = field(default_factory=dict)
    check_mode: bool = False


def _render(values_by_stage: dict) -> dict[str, list[dict]]:
    out = {stage: stages.render_stage(stage, values)
           for stage, values in values_by_stage.items() if values is not None}
    for stage, objs in out.items():
        held = [o["metadata"]["name"] for o in objs if o.get("kind") == "Secret"]
        if held:  # a value would reach Git: name it in SECRET_REFS instead
            raise InvalidInputError(f"stage {stage} renders Secret {', '.join(held)}; the "
                                    "export writes no Secret (see gitops/secrets.py)")
    return out


def _secret_refs(values_by_stage: dict) -> list[dict]:
    refs = []
    for stage, values in values_by_stage.items():
        if stage in stages.SECRET_REFS and values is not None:
            refs += stages.SECRET_REFS[stage](values)
    return refs


def build(req: Request) -> dict[str, str]:
    """Every file of the export, rendered (no write)."""
    inventory = tree.check_inventory_name(req.inventory)
    options = secrets.check(req.secrets or {})
    site = _render(req.stages)
    base = _render({k: v for k, v in (req.base or {}).items() if k in req.stages})
    refs = _secret_refs(req.stages)
    stubs = secrets.objects(refs, options)
    if stubs:
        site["secrets"] = stubs
    layout = tree.layout(inventory, base, site)
    layout[f"overlays/{inventory}/README.md"] = secrets.readme(inventory, refs, options)
    if req.application is not None:
        layout[f"argocd/{inventory}.yaml"] = argocd.application(inventory, req.application)
    return tree.render_files(layout)


def run(req: Request) -> dict:
    wanted = build(req)
    roots = ["base", f"overlays/{req.inventory}", f"argocd/{req.inventory}.yaml"]
    result = files.sync(req.dest, roots, wanted, req.check_mode)
    overlay = f"overlays/{req.inventory}"
    return {"changed": bool(result["written"] or result["removed"]),
            "written": result["written"], "removed": result["removed"],
            "files": sorted(wanted), "overlay": overlay,
            "application": f"argocd/{req.inventory}.yaml" if req.application is not None
            else None,
            "secrets": [f"{r['namespace']}/{r['name']}" for r in _secret_refs(req.stages)],
            "diff": result["diff"]}
