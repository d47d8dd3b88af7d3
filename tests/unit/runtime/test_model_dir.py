"""check_model_dir: a published model passes, anything incomplete is refused by name."""

import json

import pytest
from gpu_stack_runtime.launcher import MARKER_NAME, LaunchError, check_model_dir
from gpu_stack_runtime.launcher.errors import EXIT_MODEL


def _model(tmp_path, marker=True, weights=("model.safetensors",), config=True):
    if config:
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    for name in weights:
        (tmp_path / name).write_bytes(b"\0" * 16)
    if marker:
        files = [{"path": p.name, "size": p.stat().st_size} for p in sorted(tmp_path.iterdir())]
        (tmp_path / MARKER_NAME).write_text(json.dumps({"format": 1, "files": files}))
    return tmp_path


def _refused(path, fragment):
    with pytest.raises(LaunchError) as err:
        check_model_dir(path)
    assert err.value.exit_code == EXIT_MODEL
    assert fragment in str(err.value)


def test_published_model_returns_the_marker(tmp_path):
    marker = check_model_dir(_model(tmp_path))
    assert marker["format"] == 1
    assert [f["path"] for f in marker["files"]] == ["config.json", "model.safetensors"]


def test_marker_name_is_the_stagers():
    assert MARKER_NAME.endswith(".json") and "/" not in MARKER_NAME
    stager_marker = pytest.importorskip("gpu_stack_runtime.stager.marker")
    assert stager_marker.MARKER == MARKER_NAME


def test_file_listed_in_the_marker_but_missing_or_resized_is_refused(tmp_path):
    _model(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 8)
    _refused(tmp_path, "model.safetensors (8 bytes, marker says 16)")
    (tmp_path / "config.json").unlink()
    _refused(tmp_path, "2 of 2 files listed in the completion marker")


def test_marker_entry_escaping_the_directory_is_refused(tmp_path):
    _model(tmp_path)
    (tmp_path / MARKER_NAME).write_text(json.dumps({"files": [{"path": "../etc/passwd"}]}))
    _refused(tmp_path, "bad file entry")


def test_missing_marker_is_refused_naming_the_marker(tmp_path):
    _refused(_model(tmp_path, marker=False), MARKER_NAME)


def test_marker_that_is_not_a_json_object_is_refused(tmp_path):
    _model(tmp_path)
    (tmp_path / MARKER_NAME).write_text("[1, 2]")
    _refused(tmp_path, "not a JSON object")
    (tmp_path / MARKER_NAME).write_text("{half")
    _refused(tmp_path, "not valid JSON")


def test_missing_config_is_refused(tmp_path):
    _refused(_model(tmp_path, config=False), "config.json")


def test_missing_weights_are_refused(tmp_path):
    _refused(_model(tmp_path, weights=()), "no weights")


def test_shard_named_in_the_index_but_missing_is_refused(tmp_path):
    _model(tmp_path, weights=("model-00001-of-00002.safetensors",))
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors",
                            "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    _refused(tmp_path, "1 of 2 weight shards")


def test_not_a_directory_is_refused(tmp_path):
    _refused(tmp_path / "absent", "does not exist")
