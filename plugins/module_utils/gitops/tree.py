# Copyright: llmops.gpu_stack contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The kustomize tree of an export: ``files(...) -> {relative path: text}``.

::

    base/kustomization.yaml           the collection's pinned stages (role defaults)
    base/<stage>/<kind>-<name>.yaml
    overlays/<inventory>/kustomization.yaml
    overlays/<inventory>/<stage>/<kind>-<name>.yaml   the inventory's own objects
    overlays/<inventory>/patches/<stage>-<kind>-<name>.yaml
                                      what the inventory changes in a base object
                                      (RFC 6902 operations), or deletes
    overlays/<inventory>/README.md    the Secrets the site provides (never their values)
    argocd/<inventory>.yaml           the Argo CD Application of the overlay

A stage in ``base`` is rendered twice, from the base values and from the inventory's;
the overlay then holds only the difference. Every other stage is rendered from the
inventory's values into the overlay. ``kubectl kustomize overlays/<inventory>`` yields
exactly the inventory's rendered objects.
"""

from __future__ import annotations

try:
    import yaml
except ImportError:  # the module reports it (missing_required_lib)
    yaml = None
    HAS_YAML = False
else:
    HAS_YAML = True

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.gitops.patches import json_patch

KUSTOMIZE = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
HEADER = "# Written by llmops.gpu_stack's gitops_export from the roles' rendering code.\n" \
         "# Change the inventory and export again rather than editing by hand.\n"


def dump(obj) -> str:
    return yaml.safe_dump(obj, default_flow_style=False, sort_keys=False, width=100)


def ident(obj: dict) -> tuple:
    meta = obj.get("metadata") or {}
    api = obj.get("apiVersion", "")
    return (api.split("/")[0] if "/" in api else "", obj["kind"], meta.get("namespace") or "",
            meta["name"])


def unique(objs: list[dict]) -> list[dict]:
    """One copy of an object two stages both render (a shared Namespace); two different
    objects with one identity are an error."""
    seen: dict[tuple, dict] = {}
    out = []
    for obj in objs:
        key = ident(obj)
        if key in seen:
            if seen[key] != obj:
                raise InvalidInputError(f"two stages render {obj['kind']} "
                                        f"{'/'.join(k for k in key[2:] if k)} differently")
            continue
        seen[key] = obj
        out.append(obj)
    return out


def _file_names(stage_objs: dict[str, list[dict]]) -> dict[tuple, str]:
    """identity -> ``<stage>/<kind>-<name>.yaml`` (namespace added on a clash)."""
    names: dict[tuple, str] = {}
    taken: set[str] = set()
    for stage, objs in stage_objs.items():
        for obj in objs:
            key = ident(obj)
            if key in names:
                continue
            name = f"{stage}/{obj['kind'].lower()}-{key[3]}.yaml"
            if name in taken:
                name = f"{stage}/{obj['kind'].lower()}-{key[2]}-{key[3]}.yaml"
            taken.add(name)
            names[key] = name
    return names


def _dedup(stage_objs: dict[str, list[dict]]) -> dict[str, list[dict]]:
    unique([o for objs in stage_objs.values() for o in objs])  # raises on a conflict
    seen, out = set(), {}
    for stage, objs in stage_objs.items():
        out[stage] = []
        for obj in objs:
            if ident(obj) not in seen:
                seen.add(ident(obj))
                out[stage].append(obj)
    return out


def _target(obj: dict) -> dict:
    api = obj["apiVersion"]
    target = {"group": api.split("/")[0] if "/" in api else "",
              "version": api.split("/")[-1], "kind": obj["kind"], "name": obj["metadata"]["name"]}
    if obj["metadata"].get("namespace"):
        target["namespace"] = obj["metadata"]["namespace"]
    return target


def _delete(obj: dict) -> dict:
    meta = {k: v for k, v in obj["metadata"].items() if k in ("name", "namespace")}
    return {"$patch": "delete", "apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "metadata": meta}


def layout(inventory: str, base: dict[str, list[dict]], site: dict[str, list[dict]]
           ) -> dict[str, object]:
    """{relative path: YAML object(s)}: base files, the overlay's resources and patches."""
    base, site = _dedup(base), _dedup(site)
    out: dict[str, object] = {}
    base_names = _file_names(base)
    for objs in base.values():
        for obj in objs:
            out[f"base/{base_names[ident(obj)]}"] = obj
    base_ids = {ident(o): o for objs in base.values() for o in objs}
    site_ids = {ident(o) for objs in site.values() for o in objs}
    out["base/kustomization.yaml"] = {**KUSTOMIZE, "resources": [
        base_names[ident(o)] for objs in base.values() for o in objs]}

    over = f"overlays/{inventory}"
    own = {s: [o for o in objs if ident(o) not in base_ids] for s, objs in site.items()}
    names = _file_names(own)
    resources, patches = ["../../base"] if base_ids else [], []
    for objs in site.values():
        for obj in objs:
            key = ident(obj)
            if key not in base_ids:
                out[f"{over}/{names[key]}"] = obj
                resources.append(names[key])
                continue
            ops = json_patch(base_ids[key], obj)
            if ops:
                path = f"patches/{base_names[key].replace('/', '-')}"
                out[f"{over}/{path}"] = ops
                patches.append({"path": path, "target": _target(obj)})
    for key, obj in base_ids.items():
        if key not in site_ids:
            path = f"patches/delete-{base_names[key].replace('/', '-')}"
            out[f"{over}/{path}"] = _delete(obj)
            patches.append({"path": path})
    kustomization = {**KUSTOMIZE, "resources": resources}
    if patches:
        kustomization["patches"] = patches
    out[f"{over}/kustomization.yaml"] = kustomization
    return out


def render_files(objects: dict[str, object]) -> dict[str, str]:
    """YAML text of each file, with the header; Markdown and text kept as they are."""
    return {path: obj if isinstance(obj, str) else HEADER + dump(obj)
            for path, obj in objects.items()}


def check_inventory_name(name: str) -> str:
    if not name or any(c in name for c in "/\\") or name in (".", ".."):
        raise InvalidInputError(f"inventory name {name!r} must be one path segment "
                                "(it names overlays/<inventory>)")
    return name
