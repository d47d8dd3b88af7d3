"""The runtime keeps its side of the controller/runtime contract (common/contract.py):
the stager reads every environment name the controller sets, writes the marker schema
the launcher reads, and the launcher exits with the codes the controller knows."""

from __future__ import annotations

import hashlib

import pytest
from gpu_stack_runtime.common import contract
from gpu_stack_runtime.common.errors import GpuStackError, TransientError
from gpu_stack_runtime.launcher import LaunchError, check_model_dir
from gpu_stack_runtime.stager import marker
from gpu_stack_runtime.stager.cli import build_parser
from gpu_stack_runtime.stager.errors import StageError
from gpu_stack_runtime.stager.errors import TransientError as StagerTransient
from gpu_stack_runtime.stager.model import Listing, RemoteFile
from gpu_stack_runtime.stager.publish import StagingArea
from gpu_stack_runtime.stager.transfer import FileResult

_CONTROLLER_ENV = sorted({
    contract.STAGE_SOURCE, contract.STAGE_DEST, contract.STAGE_JOBS,
    contract.STAGE_PROGRESS_INTERVAL, contract.STAGE_TOKEN_FILE,
    contract.STAGE_S3_CREDENTIALS_DIR, contract.STAGE_MANIFEST,
    *contract.STAGE_SOURCE_ENV.values()})


@pytest.mark.parametrize("name", _CONTROLLER_ENV)
def test_the_stager_reads_every_environment_name_the_controller_sets(monkeypatch, name):
    for other in _CONTROLLER_ENV:
        monkeypatch.delenv(other, raising=False)
    before = vars(build_parser().parse_args([]))
    monkeypatch.setenv(name, "s3" if name == contract.STAGE_SOURCE else "7")
    after = vars(build_parser().parse_args([]))
    assert {k for k in after if after[k] != before[k]}, f"{name} changes no stager option"


def test_the_stager_knows_the_contracts_sources():
    choices = next(a.choices for a in build_parser()._actions if a.dest == "source")
    assert tuple(choices) == contract.STAGE_SOURCES


def test_staging_area_and_upload_dir_follow_the_contract(tmp_path):
    area = StagingArea(tmp_path / "llama")
    assert area.root == tmp_path / contract.STAGING_AREA
    assert str(area.upload_dir) == contract.upload_dir(str(tmp_path / "llama"))
    nested = StagingArea(tmp_path / "org" / "llama")
    assert str(nested.upload_dir) == contract.upload_dir(str(tmp_path / "org" / "llama"))


def _published_model(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    files = {"config.json": b"{}", "model.safetensors": b"weights"}
    results, remote = {}, []
    for name, data in files.items():
        (d / name).write_bytes(data)
        remote.append(RemoteFile(name, len(data), etag="e"))
        results[name] = FileResult(name, len(data), {"sha256": hashlib.sha256(data).hexdigest()},
                                   ["sha256"],
                                   (d / name).stat().st_mtime_ns)
    doc = marker.build({"type": "http", "url": "http://h/m"}, Listing(remote, "r1"), results,
                       0.0, 1.0)
    marker.write(d, doc)
    return d, doc


def test_the_marker_the_stager_writes_has_the_contract_schema(tmp_path):
    d, doc = _published_model(tmp_path)
    assert (d / contract.MARKER_NAME).is_file()
    assert tuple(sorted(doc)) == tuple(sorted(contract.MARKER_KEYS))
    assert doc["format"] == contract.MARKER_FORMAT
    for entry in doc["files"]:
        assert sorted(entry) == sorted(contract.MARKER_FILE_KEYS)


def test_the_launcher_accepts_what_the_stager_published_and_notices_a_change(tmp_path):
    d, _doc = _published_model(tmp_path)
    assert check_model_dir(d)["format"] == contract.MARKER_FORMAT
    (d / "model.safetensors").write_bytes(b"truncated, longer")
    with pytest.raises(LaunchError) as err:
        check_model_dir(d)
    assert err.value.exit_code == contract.LAUNCH_EXIT_MODEL


def test_one_error_hierarchy():
    assert issubclass(LaunchError, GpuStackError) and issubclass(StageError, GpuStackError)
    assert StagerTransient is TransientError
