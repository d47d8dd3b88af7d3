"""Complex role inputs are typed: every dict (and list of dicts) option of every role has
``options:``, except the free-form maps listed below with their reason; secrets are
``no_log``; defaults and inventory values pass the typed options; sub-options that mirror a
module's options agree with that module."""

from __future__ import annotations

import pathlib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
ALL_ROLES = sorted(p.parent.parent.name for p in ROOT.glob("roles/*/meta/argument_specs.yml"))

# Options whose keys are genuinely open-ended stay ``type: dict`` without sub-options.
# A new untyped dict fails test_every_dict_option_is_typed until it is typed or listed here.
FREE_FORM_MAPS = {
    "ocp_gpu_nodes_node_map": "any VM name to its node name",
    "ocp_gpu_nodes_labels": "any Kubernetes label key to its value",
    "gpu_operators_node_map": "any VM name to its node name",
    "gpu_operators_nfd_overrides": "any part of the NodeFeatureDiscovery CR (the operator's CRD)",
    "gpu_operators_cluster_policy_overrides": "any part of the ClusterPolicy CR (its CRD)",
    "gpu_operators_serving_platform_ocp": "platform to release to OpenShift minor versions",
    "ray_vllm_node_selector": "any node label key to its value (a nodeSelector)",
    "ray_vllm_env": "any environment variable name to its value",
    "ray_vllm_head_ray_params": "any `ray start` option to its value (rayStartParams)",
    "ray_vllm_worker_ray_params": "any `ray start` option to its value (rayStartParams)",
    "ray_vllm_kuberay_operator_pod_labels": "any label key to its value (a podSelector)",
    "llm_gateway_node_selector": "any node label key to its value (a nodeSelector)",
    "llm_gateway_env": "any environment variable name to its value",
    "monitoring_labels": "any label key to its value (a Prometheus' selectors)",
    "monitoring_dashboard_labels": "any label key to its value (a Grafana sidecar's label)",
    "monitoring_gateway_service_labels": "any label key to its value (a Service selector)",
}
SECRET_NAMES = {"password", "api_key", "token", "client_key", "kubeconfig", "basic_auth",
                "proxy_basic_auth", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def _options(role: str) -> dict:
    path = ROOT / "roles" / role / "meta" / "argument_specs.yml"
    return yaml.safe_load(path.read_text())["argument_specs"]["main"]["options"]


def _untyped(options: dict, path: str = "") -> list[str]:
    out = []
    for name, spec in (options or {}).items():
        where = f"{path}{name}"
        is_dict = spec.get("type") == "dict" or (spec.get("type") == "list"
                                                 and spec.get("elements") == "dict")
        if is_dict and "options" not in spec and name not in FREE_FORM_MAPS:
            out.append(where)
        out += _untyped(spec.get("options"), f"{where}.")
    return out


def _text(spec: dict) -> str:
    text = spec["description"]
    return " ".join(text) if isinstance(text, list) else text


def _free_form_described(spec: dict) -> bool:
    text = _text(spec)
    return "free-form" in text or "no fixed sub-options" in text


def _secrets_not_hidden(options: dict, path: str = "") -> list[str]:
    out = []
    for name, spec in (options or {}).items():
        secret = name in SECRET_NAMES or name.endswith(
            ("_api_key", "_password", "_k8s_auth", "_credentials"))
        if secret and spec.get("no_log") is not True:
            out.append(f"{path}{name}")
        out += _secrets_not_hidden(spec.get("options"), f"{path}{name}.")
    return out


@pytest.mark.parametrize("role", ALL_ROLES)
def test_every_dict_option_is_typed(role):
    options = _options(role)
    assert _untyped(options) == []
    for name in FREE_FORM_MAPS.keys() & set(options):
        assert _free_form_described(options[name]), name
        assert options[name]["type"] == "dict" and "options" not in options[name], name


def test_every_free_form_map_exists():
    known = {name for role in ALL_ROLES for name in _options(role)}
    assert set(FREE_FORM_MAPS) <= known, set(FREE_FORM_MAPS) - known


@pytest.mark.parametrize("role", ALL_ROLES)
def test_secrets_are_no_log(role):
    assert _secrets_not_hidden(_options(role)) == []


def test_the_checks_find_an_untyped_dict_and_a_visible_secret():
    options = {"a": {"type": "dict", "options": {"b": {"type": "list", "elements": "dict"}}},
               "ocp_gpu_nodes_labels": {"type": "dict"}, "c": {"type": "dict"}}
    assert _untyped(options) == ["a.b", "c"]
    options = {"v": {"type": "dict", "options": {"password": {"type": "str"}}},
               "x_api_key": {"type": "str", "no_log": True}, "y_k8s_auth": {"type": "dict"}}
    assert _secrets_not_hidden(options) == ["v.password", "y_k8s_auth"]


def _literal(value, removed: set):
    """``value`` without its templated strings (their names go to ``removed``): only
    literal values can be checked here; Ansible checks the rendered ones at run time."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(item, str) and "{{" in item:
                removed.add(key)
            else:
                out[key] = _literal(item, removed)
        return out
    if isinstance(value, list):
        return [_literal(item, removed) for item in value]
    return value


def _validate(role: str, values: dict) -> list[str]:
    """Ansible's own validator (what a role runs at its start) on literal values."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    spec = _options(role)
    removed: set = set()
    literal = _literal({k: v for k, v in values.items() if k in spec}, removed)
    errors = ArgumentSpecValidator(spec).validate(literal).error_messages
    kept = []
    for error in errors:
        if error.startswith("missing required arguments: "):
            names = error.split(": ", 1)[1].split(" found in ")[0].split(", ")
            # a required top-level option comes from the inventory, not from defaults;
            # a required nested one may be a template
            if " found in " not in error or set(names) <= removed:
                continue
        kept.append(error)
    return kept


@pytest.mark.parametrize("role", ALL_ROLES)
def test_defaults_pass_the_roles_own_validation(role):
    defaults = ROOT / "roles" / role / "defaults" / "main.yml"
    values = yaml.safe_load(defaults.read_text()) if defaults.exists() else {}
    assert _validate(role, values or {}) == []


@pytest.mark.parametrize("inventory", ["example", "lab"])
@pytest.mark.parametrize("role", ALL_ROLES)
def test_inventory_values_pass_the_typed_options(role, inventory):
    values = {}
    for path in sorted((ROOT / "inventories" / inventory / "group_vars").rglob("*.yml")):
        values.update(yaml.safe_load(path.read_text()) or {})
    assert _validate(role, values) == []


def test_the_validation_catches_a_bad_nested_value():
    errors = _validate("model_storage", {
        "model_storage_pvc": {"size": "1Gi", "reclaim_policy": "Keep"},
        "model_storage_source": {"type": "ftp", "repo": "x"}})
    text = " ".join(errors)
    assert "reclaim_policy" in text and "ftp" in text and "repo" in text
    missing = _validate("model_storage", {"model_storage_pvc": {"size": "1Gi"}})
    assert any("name found in model_storage_pvc" in e for e in missing), missing


def test_a_templated_nested_value_is_left_to_run_time_but_a_literal_one_is_checked():
    vcenter = {"hostname": "vc", "username": "u", "password": "{{ vault_pw }}", "port": "{{ p }}"}
    assert _validate("esxi_gpu_passthrough", {"esxi_gpu_passthrough_vcenter": vcenter}) == []
    vcenter = {"hostname": "vc", "port": "x", "validate_certs": "maybe"}
    errors = _validate("esxi_gpu_passthrough", {"esxi_gpu_passthrough_vcenter": vcenter})
    assert any("port" in e for e in errors) and any("validate_certs" in e for e in errors), errors


def test_ray_vllm_typed_values_are_checked():
    errors = _validate("ray_vllm", {
        "ray_vllm_head_resources": {"cpu": "1"},
        "ray_vllm_worker_resources": {"memory": "2Gi", "gpu": 1},
        "ray_vllm_tolerations": [{"key": "k", "operator": "Maybe"}]})
    text = " ".join(errors)
    assert "memory found in ray_vllm_head_resources" in text, errors
    assert "gpu" in text and "Maybe" in text, errors


@pytest.mark.parametrize(("model", "topology"), [
    ({"preset": "llama-3-70b"}, "head_without_gpus"),
    ({"preset": "mixtral-8x7b", "quantization": "awq"}, "head_with_gpus"),
    ({"preset": "llama-3-8b"}, "head_with_gpus"),
])
def test_the_planners_plans_pass_ray_vllm_plan(model, topology):
    from ansible_collections.llmops.gpu_stack.plugins.module_utils.serving.plan import build_plan

    plan = build_plan(model, {"nodes": 8, "gpus_per_node": 2, "gpu_memory_gib": 40},
                      {"concurrent_sequences": 2}, None, topology)
    assert _validate("ray_vllm", {"ray_vllm_plan": plan}) == []
    assert _validate("ray_vllm", {"ray_vllm_plan": {**plan, "extra": 1}}) != []


def _disagreements(role_opts: dict, module_opts: dict, path: str = "") -> list[str]:
    """Names, types, choices and no_log of a role's sub-options against the module's."""
    out = sorted(f"{path}{k}: only in one" for k in set(role_opts) ^ set(module_opts))
    for key in set(role_opts) & set(module_opts):
        mine, theirs = role_opts[key], module_opts[key]
        for attr in ("type", "choices", "elements", "no_log"):
            if mine.get(attr) != theirs.get(attr) and not (attr == "no_log"
                                                           and not mine.get(attr)
                                                           and not theirs.get(attr)):
                out.append(f"{path}{key}.{attr}: {mine.get(attr)!r} != {theirs.get(attr)!r}")
        out += _disagreements(mine.get("options") or {}, theirs.get("options") or {},
                              f"{path}{key}.")
    return out


def test_serving_plan_sub_options_agree_with_the_modules():
    from ansible_collections.llmops.gpu_stack.plugins.modules import gpu_fleet_report, serving_plan

    role = _options("serving_plan")
    module = serving_plan.argument_spec()
    for option in ("model", "hardware", "targets", "layout"):
        assert _disagreements(role[f"serving_plan_{option}"]["options"],
                              module[option]["options"]) == [], option
    vcenter = gpu_fleet_report._argument_spec()["vcenter"]["options"]
    assert _disagreements(role["serving_plan_vcenter"]["options"], vcenter) == []
    assert _disagreements({"a": {"type": "int"}}, {"a": {"type": "str"}, "b": {}}) == [
        "b: only in one", "a.type: 'int' != 'str'"]
