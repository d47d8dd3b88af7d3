"""Staging area, marker and atomic publish on a real filesystem (no network)."""

from __future__ import annotations

import json
import os

import pytest
from gpu_stack_runtime.stager import marker
from gpu_stack_runtime.stager.errors import InsufficientSpaceError, StageError
from gpu_stack_runtime.stager.model import Listing, RemoteFile
from gpu_stack_runtime.stager.publish import StagingArea
from gpu_stack_runtime.stager.stage import _check_listing
from gpu_stack_runtime.stager.transfer import FileResult


def _stage_files(area: StagingArea, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (area.staging / name).parent.mkdir(parents=True, exist_ok=True)
        (area.staging / name).write_bytes(data)


def test_publish_new_then_swap_replaces_atomically(tmp_path):
    area = StagingArea(tmp_path / "model")
    _stage_files(area, {"a.bin": b"v1"})
    area.publish()
    assert (tmp_path / "model" / "a.bin").read_bytes() == b"v1"
    assert not area.staging.exists()
    _stage_files(area, {"a.bin": b"v2", "b.bin": b"new"})
    area.publish()
    assert sorted(os.listdir(tmp_path / "model")) == ["a.bin", "b.bin"]
    assert (tmp_path / "model" / "a.bin").read_bytes() == b"v2"
    assert not area.staging.exists() and not area.old.exists()


def test_recover_restores_a_swap_interrupted_between_renames(tmp_path):
    area = StagingArea(tmp_path / "model")
    area.root.mkdir()
    area.old.mkdir()
    (area.old / "a.bin").write_bytes(b"v1")  # killed after dest -> old, before staging -> dest
    area.recover()
    assert (tmp_path / "model" / "a.bin").read_bytes() == b"v1" and not area.old.exists()
    area.old.mkdir()  # killed after both renames, before the old copy was removed
    area.recover()
    assert not area.old.exists() and (tmp_path / "model" / "a.bin").exists()


def test_lock_is_exclusive(tmp_path):
    import subprocess
    import sys

    area = StagingArea(tmp_path / "model")
    with area.locked():
        # POSIX locks are per process: try from another one.
        code = ("import sys; from pathlib import Path;"
                "from gpu_stack_runtime.stager.publish import StagingArea;"
                "from gpu_stack_runtime.stager.errors import BusyError\n"
                "try:\n"
                f"    StagingArea(Path({str(tmp_path / 'model')!r})).locked().__enter__()\n"
                "except BusyError: sys.exit(10)\n")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == 10
    with area.locked():
        pass  # released


def test_space_check_refuses_before_writing(tmp_path):
    area = StagingArea(tmp_path / "model")
    with pytest.raises(InsufficientSpaceError, match="needs"):
        area.check_space(1 << 62, 0)
    area.check_space(1, 0)
    assert not area.root.exists()


def test_prune_removes_files_of_another_version(tmp_path):
    area = StagingArea(tmp_path / "model")
    _stage_files(area, {"keep.bin": b"1", "old/stale.bin": b"2", "keep.bin.part": b"3"})
    area.prune({"keep.bin"}, {"keep.bin.part"})
    assert sorted(p.relative_to(area.staging).as_posix() for p in area.staging.rglob("*")) == [
        "keep.bin", "keep.bin.part"]


def _listing(*files):
    return Listing([RemoteFile(p, s, {"sha256": d}) for p, s, d in files], "rev1")


def test_marker_key_changes_with_content_and_stat_check_finds_changes(tmp_path):
    src = {"type": "http", "url": "http://h/m"}
    a = _listing(("a.bin", 2, "aa" * 32))
    assert marker.source_key(src, a) == marker.source_key(dict(src), _listing(("a.bin", 2,
                                                                              "aa" * 32)))
    assert marker.source_key(src, a) != marker.source_key(src, _listing(("a.bin", 2, "bb" * 32)))
    assert marker.source_key(src, a) != marker.source_key({**src, "url": "http://h/n"}, a)
    d = tmp_path / "m"
    d.mkdir()
    (d / "a.bin").write_bytes(b"xy")
    res = FileResult("a.bin", 2, {"sha256": "aa" * 32}, ["sha256"],
                     (d / "a.bin").stat().st_mtime_ns)
    doc = marker.build(src, a, {"a.bin": res}, 0.0, 1.5)
    marker.write(d, doc)
    assert marker.read(d) == json.loads(json.dumps(doc))
    assert marker.changed_files(d, doc) == []
    assert marker.corrupt_files(d, doc) == ["a.bin"]  # "xy" is not aa..aa
    (d / "a.bin").write_bytes(b"xyz")
    assert marker.changed_files(d, doc) == ["a.bin"]
    (d / marker.MARKER).write_text("{broken")
    assert marker.read(d) is None


@pytest.mark.parametrize("paths", [
    ["a", "a"],
    ["a", "a/b"],
    [".gpu-stack-stage.json"],
    ["w.bin", "w.bin.part"],
])
def test_listing_collisions_are_refused(paths):
    with pytest.raises(StageError):
        _check_listing(Listing([RemoteFile(p, 1) for p in paths]))
