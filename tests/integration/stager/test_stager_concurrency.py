"""Two stagers of one model, and same-size corruption: the second run waits for the first's
lock and finds its result; a damaged shard that size and mtime cannot see is found by
--verify and repaired from a new upload."""

from __future__ import annotations

import json
import os
import shutil
import threading

import pytest
from gpu_stack_runtime.stager.publish import StagingArea
from integration.lab.waiting import wait_for
from stagerkit import assert_staged, run_cli, spawn_cli, write_manifest

pytestmark = pytest.mark.slow


def _upload(model, volume):
    upload = volume / ".gpu-stack-staging" / "llama.upload"
    for name, path in model.items():
        (upload / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, upload / name)
    return upload


def _args(manifest, volume, *extra):
    return ["--source", "local", "--manifest", str(manifest), "--dest", str(volume / "llama"),
            *extra]


class _Lines:
    """A process's stderr, collected as it comes."""

    def __init__(self, proc):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc):
        for line in proc.stderr:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)


def test_a_second_run_waits_for_the_lock_then_finds_the_first_runs_model(
        model, volume, tmp_path, capsys):
    _upload(model, volume)
    manifest = write_manifest(tmp_path / "m.json", model)
    with StagingArea(volume / "llama").locked():  # the first run holds the lock...
        second = spawn_cli(_args(manifest, volume, "--lock-wait", "60"))
        err = _Lines(second)
        wait_for(lambda: "waiting up to 60s" in err.text(), "the second run to wait",
                 context=err.text)
        rc, result, log = run_cli(_args(manifest, volume), capsys)  # ...and stages
        assert rc == 0 and result["changed"], log
        assert second.poll() is None  # still waiting while the lock is held
    out, _rest = second.communicate(timeout=60)
    assert second.returncode == 0, err.text()
    again = json.loads(out.strip().splitlines()[-1])
    assert again["changed"] is False and again["reason"] == "marker matches"
    assert_staged(volume / "llama", model)


def test_without_lock_wait_a_second_run_is_refused_at_once(model, volume, tmp_path, capsys):
    _upload(model, volume)
    manifest = write_manifest(tmp_path / "m.json", model)
    with StagingArea(volume / "llama").locked():
        other = spawn_cli(_args(manifest, volume))
        out, err = other.communicate(timeout=60)
    assert other.returncode == 10, err
    assert json.loads(out.strip().splitlines()[-1])["error"] == "busy"
    assert not (volume / "llama").exists()


def test_same_size_corruption_is_found_by_verify_and_repaired_from_a_new_upload(
        model, volume, tmp_path, capsys):
    _upload(model, volume)
    manifest = write_manifest(tmp_path / "m.json", model)
    assert run_cli(_args(manifest, volume), capsys)[0] == 0
    shard = volume / "llama" / "model-00002-of-00003.safetensors"
    st = shard.stat()
    data = bytearray(shard.read_bytes())
    data[1000:1004] = bytes(b ^ 0xFF for b in data[1000:1004])
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as staged
    rc, result, _log = run_cli(_args(manifest, volume), capsys)
    assert rc == 0 and result["changed"] is False  # stat alone cannot see it

    _upload(model, volume)  # what the controller does when asked to verify a local model
    rc, result, log = run_cli(_args(manifest, volume, "--verify"), capsys)
    assert rc == 0 and result["changed"], log
    assert result["reason"] == "stale files"
    assert result["stale_files"] == ["model-00002-of-00003.safetensors"]
    assert_staged(volume / "llama", model)
    rc, result, _log = run_cli(_args(manifest, volume, "--verify"), capsys)
    assert rc == 0 and result["changed"] is False
