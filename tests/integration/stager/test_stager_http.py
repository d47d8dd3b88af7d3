"""HTTP files with a sha256 manifest, against a real HTTP server with fault hooks."""

from __future__ import annotations

import json
import random
import signal
import time

import pytest
from stagerkit import (
    assert_staged,
    assert_verify_repairs,
    run_cli,
    spawn_cli,
    staged_bytes_on_disk,
    wait_journalled,
    write_manifest,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def served(fileserver, model, tmp_path):
    for name, path in model.items():
        fileserver.add_file(f"m/{name}", path)
    manifest = write_manifest(tmp_path / "manifest.json", model)
    return {"url": f"{fileserver.url}/files/m", "manifest": str(manifest)}


def _args(served, dest):
    return ["--source", "http", "--url", served["url"], "--manifest", served["manifest"],
            "--dest", str(dest)]


def _total(model):
    return sum(p.stat().st_size for p in model.values())


def test_fresh_stage_then_rerun_is_a_noop(served, model, volume, fileserver, capsys):
    dest = volume / "llama"
    rc, result, _err = run_cli(_args(served, dest), capsys)
    assert rc == 0 and result["changed"] is True
    doc = assert_staged(dest, model)
    assert doc["source"]["type"] == "http" and doc["total_bytes"] == _total(model)
    assert all("sha256" in f["verified"] for f in doc["files"])
    assert fileserver.total_served() == _total(model)
    assert not (volume / ".gpu-stack-staging" / "llama").exists()

    before = fileserver.total_served()
    t0 = time.monotonic()
    rc, result, err = run_cli(_args(served, dest), capsys)
    assert rc == 0 and result["changed"] is False, err
    assert time.monotonic() - t0 < 2
    assert fileserver.total_served() == before  # not one byte fetched again


def test_check_mode_reports_and_writes_nothing(served, model, volume, fileserver, capsys):
    rc, result, _err = run_cli([*_args(served, volume / "m"), "--check"], capsys)
    assert rc == 0 and result["changed"] is True and result["transfer_bytes"] == _total(model)
    assert list(volume.iterdir()) == [] and fileserver.total_served() == 0


def test_connection_cut_mid_file_resumes_without_resending(
        served, model, volume, fileserver, capsys):
    big = max(model, key=lambda n: model[n].stat().st_size)
    fileserver.cut_at[f"m/{big}"] = random.randrange(1, model[big].stat().st_size)
    rc, _result, err = run_cli(_args(served, volume / "m"), capsys)
    assert rc == 0, err
    assert_staged(volume / "m", model)
    assert fileserver.total_served() == _total(model)  # the cut file resumed at its offset
    ranged = [h for m, p, h in fileserver.requests if p.endswith(big) and "Range" in h]
    assert len(ranged) == 1 and "If-Match" in ranged[0]


def test_killed_transfer_resumes_and_resends_only_unfinished(served, model, volume, fileserver):
    total = _total(model)
    rng = random.Random()
    big = sorted(model, key=lambda n: model[n].stat().st_size)[-2]
    at = rng.randrange(1, model[big].stat().st_size)
    fileserver.stall_at[f"m/{big}"] = (at, __import__("threading").Event())
    dest = volume / "m"
    proc = spawn_cli(["--jobs", "2", *_args(served, dest)])
    assert fileserver.stalled.wait(30), "the transfer never reached the stall point"
    staging = volume / ".gpu-stack-staging" / "m"
    wait_journalled(staging, set(model) - {big})  # all but the stalled file is staged
    assert not dest.exists()  # a half-staged model is never visible at the final path
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    fileserver.stall_at.clear()
    on_disk = staged_bytes_on_disk(staging)
    partial = any(p.stat().st_size for p in staging.rglob("*.part"))
    assert 0 < on_disk < total
    served_before = fileserver.total_served()

    proc = spawn_cli(_args(served, dest))
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    resent = fileserver.total_served() - served_before
    assert resent == total - on_disk, f"stall at byte {at} of {big}"
    assert ("resuming at byte" in err) == partial
    assert_staged(dest, model)


def test_corrupted_partial_is_detected_and_refetched(served, model, volume, fileserver, capsys):
    big = max(model, key=lambda n: model[n].stat().st_size)
    fileserver.cut_at[f"m/{big}"] = 1 << 20
    rc, _r, _e = run_cli([*_args(served, volume / "m"), "--retries", "0"], capsys)
    assert rc == 9  # the transfer gave up: a partial file stays in staging
    part = volume / ".gpu-stack-staging" / "m" / f"{big}.part"
    data = bytearray(part.read_bytes())
    data[1000] ^= 0xFF
    part.write_bytes(bytes(data))
    rc, _r, err = run_cli(_args(served, volume / "m"), capsys)
    assert rc == 0, err
    assert "digest mismatch" in err
    assert_staged(volume / "m", model)


def test_corrupted_published_file_is_refetched_with_verify(
        served, model, volume, fileserver, capsys):
    dest = volume / "m"
    assert run_cli(_args(served, dest), capsys)[0] == 0
    before = fileserver.total_served()
    assert_verify_repairs(_args(served, dest), dest, "config.json", model, capsys)
    assert fileserver.total_served() - before == model["config.json"].stat().st_size


def test_corrupt_bytes_on_the_wire_are_refetched(served, model, volume, fileserver, capsys):
    big = max(model, key=lambda n: model[n].stat().st_size)
    fileserver.corrupt_at[f"m/{big}"] = 12345
    rc, _r, err = run_cli(_args(served, volume / "m"), capsys)
    assert rc == 0 and "digest mismatch" in err
    assert_staged(volume / "m", model)


def test_source_changed_mid_stage_is_reported_and_previous_model_kept(
        served, model, volume, fileserver, capsys, tmp_path):
    dest = volume / "m"
    assert run_cli(_args(served, dest), capsys)[0] == 0
    marker_before = (dest / ".gpu-stack-stage.json").read_text()
    # A new version: the manifest changes, and the server's file changes mid-transfer.
    big = max(model, key=lambda n: model[n].stat().st_size)
    new = bytearray(model[big].read_bytes())
    new[0] ^= 1
    model[big].write_bytes(bytes(new))
    write_manifest(tmp_path / "manifest.json", model)
    fileserver.change_at[f"m/{big}"] = (100_000, b"something else entirely")
    rc, result, err = run_cli(_args(served, dest), capsys)
    assert rc == 7 and result["error"] == "source_changed", err
    assert (dest / ".gpu-stack-stage.json").read_text() == marker_before
    doc = json.loads(marker_before)
    assert (dest / big).stat().st_size == next(f["size"] for f in doc["files"] if f["path"] == big)


def test_bad_inputs_fail_before_any_write(served, volume, fileserver, capsys, tmp_path):
    rc, result, _err = run_cli(["--source", "http", "--url", served["url"],
                                "--dest", str(volume / "m")], capsys)
    assert rc == 2 and "--manifest" in result["message"]
    (volume / "hand-made").mkdir()
    (volume / "hand-made" / "weights.bin").write_bytes(b"x")
    rc, result, _err = run_cli(_args(served, volume / "hand-made"), capsys)
    assert rc == 2 and "did not stage" in result["message"]
    rc, result, _err = run_cli([*_args(served, volume / "m"), "--space-margin", str(1 << 60)],
                               capsys)
    assert rc == 5 and result["error"] == "no_space"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"files": [{"path": "../etc/passwd", "sha256": "0" * 64}]}))
    rc, result, _err = run_cli(["--source", "http", "--url", served["url"],
                                "--manifest", str(bad), "--dest", str(volume / "m")], capsys)
    assert rc == 2 and "escapes" in result["message"]
    assert fileserver.total_served() == 0
    assert not (volume / "m").exists()
    assert (volume / "hand-made" / "weights.bin").read_bytes() == b"x"


def test_partial_from_an_older_file_version_is_dropped(served, model, volume, fileserver, capsys):
    """The server's file was touched (new ETag) after a killed run: If-Match fails on the
    resume, the partial is dropped and the file fetched again; the digest decides."""
    big = max(model, key=lambda n: model[n].stat().st_size)
    fileserver.cut_at[f"m/{big}"] = 1 << 20
    assert run_cli([*_args(served, volume / "m"), "--retries", "0"], capsys)[0] == 9
    import os

    st = model[big].stat()
    os.utime(model[big], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    rc, _r, err = run_cli(_args(served, volume / "m"), capsys)
    assert rc == 0 and "dropping the partial file" in err
    assert_staged(volume / "m", model)
