"""The lab's built-in admission handlers are registered explicitly by (group, plural)."""

from __future__ import annotations

import pytest
from gpu_lab.apiserver import admission
from gpu_lab.apiserver.admission import DEFAULTERS, VALIDATORS, Admission
from gpu_lab.apiserver.errors import ApiError
from gpu_lab.apiserver.service import ApiService, Context


def test_every_handler_names_a_built_in_kind_of_the_lab(api: ApiService) -> None:
    for group, plural in [*DEFAULTERS, *VALIDATORS]:
        rt = api.rt(group, plural)  # raises NotFound for a misspelt group or plural
        assert rt.builtin, (group, plural)


def test_every_handler_method_is_registered() -> None:
    """A handler method without its decorator would silently never run."""
    registered = {*DEFAULTERS.values(), *VALIDATORS.values()}
    methods = {name: value for name, value in vars(Admission).items()
               if name.startswith(("_default_", "_validate_"))}
    assert methods and all(m in registered for m in methods.values()), sorted(
        name for name, m in methods.items() if m not in registered)


def test_a_second_handler_for_one_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="two admission handlers for pods"):
        admission._defaults("", "pods")(lambda _self, obj, old: None)
    assert DEFAULTERS[("", "pods")] is Admission._default_pods


def test_a_registered_defaulter_and_validator_run(api: ApiService, ctx: Context) -> None:
    """Through the service: the apps/deployments handlers default and validate."""
    rt = api.rt("apps", "deployments")
    body = {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "x"}]}}}}
    created = api.create(rt, "default", body, ctx)
    assert created["spec"]["replicas"] == 1 and created["spec"]["revisionHistoryLimit"] == 10
    bad = {**body, "metadata": {"name": "bad", "namespace": "default"},
           "spec": {**body["spec"], "selector": {"matchLabels": {"app": "other"}}}}
    with pytest.raises(ApiError) as err:
        api.create(rt, "default", bad, ctx)
    assert err.value.code == 422
    assert "`selector` does not match template `labels`" in err.value.message
