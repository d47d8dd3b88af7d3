"""The Argo CD Application against Argo CD's own CRD schema (shared/crds/argocd): types,
required fields and, as strict field validation does, no field the schema lacks."""

from __future__ import annotations

import pytest
import yaml
from ansible_collections.llmops.gpu_stack.plugins.module_utils.gitops import argocd

jsonschema = pytest.importorskip("jsonschema")
lab_config = pytest.importorskip("gpu_lab.config")


@pytest.fixture(scope="module")
def schema() -> dict:
    path = lab_config.default_crds() / "argocd" / "application-crd.yaml"
    if not path.is_file():
        pytest.skip(f"Argo CD's CRD not found at {path} (set GPU_LAB_CRDS)")
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    return version["schema"]["openAPIV3Schema"]


def _unknown(obj, schema: dict, path: str = "") -> list[str]:
    if isinstance(obj, dict) and "properties" in schema:
        out = []
        for key, value in obj.items():
            if key not in schema["properties"]:
                out.append(f"{path}.{key}")
            else:
                out += _unknown(value, schema["properties"][key], f"{path}.{key}")
        return out
    if isinstance(obj, list) and "items" in schema:
        return [e for item in obj for e in _unknown(item, schema["items"], f"{path}[]")]
    return []


@pytest.mark.parametrize("options", [
    {"repo_url": "https://git.example.com/platform/gpu-site.git"},
    {"repo_url": "https://git.example.com/platform/gpu-site.git", "path": "clusters/",
     "revision": "main", "destination_name": "prod", "automated": True, "prune": True,
     "name": "gpu", "namespace": "argocd", "project": "platform"},
])
def test_the_application_is_valid_for_argo_cds_crd(schema, options):
    app = argocd.application("site-a", options)
    jsonschema.Draft4Validator(schema).validate(app)  # no meta-check of the big schema
    assert _unknown(app, schema) == []
    assert app["spec"]["source"]["path"] == "/".join(
        p for p in (options.get("path", "").strip("/"), "overlays/site-a") if p)
    assert ("automated" in app["spec"]["syncPolicy"]) is bool(options.get("automated"))


def test_the_check_finds_an_unknown_field(schema):
    app = argocd.application("site-a", {"repo_url": "https://git.example.com/x.git"})
    app["spec"]["source"]["repoUrl"] = "misspelt"
    assert _unknown(app, schema) == [".spec.source.repoUrl"]
