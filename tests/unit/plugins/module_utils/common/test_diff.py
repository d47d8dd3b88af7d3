"""Tests for desired-vs-actual helpers (common/diff.py)."""

from __future__ import annotations

from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.diff import (
    has_changed,
    is_subset,
    make_diff,
    merge_diffs,
    strip_volatile,
    subset_differences,
)

ACTUAL = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {
        "name": "plan",
        "namespace": "serving",
        "resourceVersion": "42",
        "uid": "abc",
        "managedFields": [{"manager": "llmops-gpu-stack"}],
        "labels": {"app": "vllm", "tier": "serving"},
    },
    "data": {"tp": "2", "pp": "4"},
    "spec": {"containers": [{"name": "vllm", "image": "ray-vllm:1", "ports": [8000]}]},
}


def test_desired_subset_of_actual_with_server_defaults():
    desired = {"metadata": {"name": "plan", "labels": {"app": "vllm"}}, "data": {"tp": "2"}}
    assert is_subset(desired, ACTUAL)
    assert subset_differences(desired, ACTUAL) == []


def test_differences_are_reported_as_paths():
    desired = {
        "metadata": {"labels": {"app": "other", "new": "x"}},
        "data": {"tp": "2"},
        "spec": {"containers": [{"name": "vllm", "image": "ray-vllm:2"}]},
    }
    assert subset_differences(desired, ACTUAL) == [
        "metadata.labels.app",
        "metadata.labels.new",
        "spec.containers[0].image",
    ]
    assert not is_subset(desired, ACTUAL)


def test_lists_compare_by_position_and_length():
    assert not is_subset({"spec": {"containers": []}}, ACTUAL)
    assert subset_differences({"spec": {"containers": [{}, {}]}}, ACTUAL) == ["spec.containers"]
    assert is_subset([1, {"a": 1}], [1, {"a": 1, "b": 2}])
    assert not is_subset([2, 1], [1, 2])


def test_type_mismatches_and_bools():
    assert subset_differences({"data": "x"}, ACTUAL) == ["data"]
    assert subset_differences({"a": True}, {"a": 1}) == ["a"]
    assert is_subset({"a": 1}, {"a": 1.0})
    assert subset_differences(3, 4) == ["."]


def test_ignored_paths_with_wildcards():
    desired = {"spec": {"containers": [{"name": "vllm", "image": "other"}]}, "data": {"tp": "9"}}
    assert subset_differences(desired, ACTUAL, ignore=["spec.containers.*.image"]) == ["data.tp"]
    assert is_subset(desired, ACTUAL, ignore=["spec.containers.*.image", "data.tp"])


def test_strip_volatile_removes_server_managed_fields_without_touching_input():
    clean = strip_volatile(ACTUAL)
    assert "resourceVersion" not in clean["metadata"]
    assert "managedFields" not in clean["metadata"]
    assert "uid" not in clean["metadata"]
    assert clean["metadata"]["labels"] == {"app": "vllm", "tier": "serving"}
    assert ACTUAL["metadata"]["resourceVersion"] == "42"


def test_strip_volatile_wildcards_and_missing_paths():
    obj = {"items": [{"a": 1, "b": 2}, {"a": 3}], "x": {"y": 1}}
    assert strip_volatile(obj, ["items.*.a", "no.such.path", "x.*"]) == {
        "items": [{"b": 2}, {}],
        "x": {},
    }


def test_make_diff_and_has_changed_ignore_resource_version_only_changes():
    after = {**ACTUAL, "metadata": {**ACTUAL["metadata"], "resourceVersion": "43"}}
    assert not has_changed(ACTUAL, after)
    changed = {**ACTUAL, "data": {"tp": "4", "pp": "4"}}
    assert has_changed(ACTUAL, changed)
    diff = make_diff(ACTUAL, changed)
    assert diff["before"]["data"]["tp"] == "2"
    assert diff["after"]["data"]["tp"] == "4"
    assert "resourceVersion" not in diff["after"]["metadata"]


def test_make_diff_for_creation_and_deletion():
    assert make_diff(None, {"a": 1}) == {"before": {}, "after": {"a": 1}}
    assert make_diff({"a": 1}, None) == {"before": {"a": 1}, "after": {}}


def test_merge_diffs_keys_each_side():
    merged = merge_diffs({"Node/a": make_diff({"x": 1}, {"x": 2}),
                          "Node/b": make_diff(None, {"y": 1})})
    assert merged == {"before": {"Node/a": {"x": 1}, "Node/b": {}},
                      "after": {"Node/a": {"x": 2}, "Node/b": {"y": 1}}}
