"""Archive source: tar/tar.gz streamed and zip read through Range requests, unpacked in place."""

from __future__ import annotations

import hashlib
import io
import json
import random
import signal
import tarfile
import threading
import time
import zipfile

import pytest
from stagerkit import assert_staged, assert_verify_repairs, run_cli, spawn_cli, wait_journalled

pytestmark = pytest.mark.slow


def make_tar(path, model, mode="w:gz", prefix="llama/"):
    with tarfile.open(path, mode) as tf:
        for name, src in model.items():
            tf.add(src, arcname=prefix + name)
    return path


def make_zip(path, model, prefix="llama/"):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, src in model.items():
            zf.write(src, prefix + name)
    return path


def evil_tar(path, member: str, *, symlink_to: str | None = None):
    with tarfile.open(path, "w") as tf:
        good = tarfile.TarInfo("llama/config.json")
        good.size = 2
        tf.addfile(good, io.BytesIO(b"{}"))
        evil = tarfile.TarInfo(member)
        if symlink_to:
            evil.type, evil.linkname = tarfile.SYMTYPE, symlink_to
            tf.addfile(evil)
        else:
            evil.size = 4
            tf.addfile(evil, io.BytesIO(b"evil"))
    return path


def _args(url, dest, *extra):
    return ["--source", "archive", "--url", url, "--dest", str(dest), "--strip-components", "1",
            *extra]


@pytest.mark.parametrize("kind", ["tar.gz", "tar", "zip"])
def test_fresh_stage_then_rerun_is_a_noop(kind, model, fileserver, volume, tmp_path, capsys):
    path = tmp_path / f"llama.{kind}"
    if kind == "zip":
        make_zip(path, model)
    else:
        make_tar(path, model, "w:gz" if kind == "tar.gz" else "w")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    url = fileserver.add_file(path.name, path)
    dest = volume / "llama"
    rc, result, err = run_cli(_args(url, dest, "--archive-sha256", digest), capsys)
    assert rc == 0 and result["changed"], err
    doc = assert_staged(dest, model)
    assert doc["archive"]["sha256_verified"] is (kind != "zip")
    served = fileserver.total_served()
    if kind != "zip":
        assert served == path.stat().st_size  # one pass, no temporary copy, no re-read
    t0 = time.monotonic()
    rc, result, _err = run_cli(_args(url, dest, "--archive-sha256", digest), capsys)
    assert rc == 0 and result["changed"] is False and time.monotonic() - t0 < 2
    assert fileserver.total_served() == served


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_same_size_damage_is_found_by_verify_and_repaired(
        kind, model, fileserver, volume, tmp_path, capsys):
    path = tmp_path / f"llama.{kind}"
    if kind == "zip":
        make_zip(path, model)
    else:
        make_tar(path, model)
    url = fileserver.add_file(path.name, path)
    dest = volume / "llama"
    assert run_cli(_args(url, dest), capsys)[0] == 0
    assert_verify_repairs(_args(url, dest), dest, "model-00001-of-00003.safetensors", model,
                          capsys)


def test_wrong_archive_digest_is_refused(model, fileserver, volume, tmp_path, capsys):
    url = fileserver.add_file("a.tar.gz", make_tar(tmp_path / "a.tar.gz", model))
    rc, result, _err = run_cli(_args(url, volume / "m", "--archive-sha256", "0" * 64), capsys)
    assert rc == 7 and "archive sha256" in result["message"]
    assert not (volume / "m").exists()


def test_killed_plain_tar_resumes_at_the_first_unfinished_member(
        model, fileserver, volume, tmp_path):
    path = make_tar(tmp_path / "m.tar", model, "w")
    url = fileserver.add_file("m.tar", path)
    size = path.stat().st_size
    at = random.randrange(512, size - 4096)
    fileserver.stall_at["m.tar"] = (at, threading.Event())
    dest = volume / "m"
    # the members whose bytes (with 2 MiB of read-ahead) arrive before the stall
    with tarfile.open(path) as tf:
        before_stall = sum(1 for m in tf.getmembers()
                           if m.isreg() and m.offset_data + m.size + (2 << 20) <= at)
    proc = spawn_cli(_args(url, dest))
    assert fileserver.stalled.wait(30)
    # the stager has unpacked what it could, and still nothing is at the final path
    wait_journalled(volume / ".gpu-stack-staging" / "m", before_stall)
    assert not dest.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    fileserver.stall_at.clear()
    jpath = volume / ".gpu-stack-staging" / "m" / ".gpu-stack-journal.json"
    journal = json.loads(jpath.read_text()) if jpath.exists() else {}
    before = fileserver.total_served()
    proc = spawn_cli(_args(url, dest))
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    resent = fileserver.total_served() - before
    assert resent <= size - journal.get("_resume_offset", 0), f"stall at {at}"
    # At most the unfinished members (plus tar headers) are sent again.
    done = sum(e["size"] for k, e in journal.items() if not k.startswith("_"))
    assert resent <= size - done
    assert_staged(dest, model)


def test_zip_member_corrupted_on_the_wire_is_read_again(
        model, fileserver, volume, tmp_path, capsys):
    path = make_zip(tmp_path / "m.zip", model)
    url = fileserver.add_file("m.zip", path)
    fileserver.corrupt_at["m.zip"] = 100_000  # inside the first shard's compressed data
    rc, _r, err = run_cli(_args(url, volume / "m"), capsys)
    assert rc == 0 and "reading the member again" in err
    assert_staged(volume / "m", model)


@pytest.mark.parametrize(("member", "link"), [
    ("../escape.txt", None),
    ("llama/../../escape.txt", None),
    ("/tmp/abs-escape.txt", None),
    ("llama/link", "../../../escape.txt"),
    ("llama/link", "/etc/passwd"),
])
def test_path_traversal_is_refused_and_previous_model_kept(
        member, link, model, fileserver, volume, tmp_path, capsys):
    good = fileserver.add_file("good.tar.gz", make_tar(tmp_path / "good.tar.gz", model))
    dest = volume / "llama"
    assert run_cli(_args(good, dest), capsys)[0] == 0
    before = (dest / ".gpu-stack-stage.json").read_text()
    evil = fileserver.add_file("evil.tar", evil_tar(tmp_path / "evil.tar", member,
                                                    symlink_to=link))
    rc, result, _err = run_cli(_args(evil, dest), capsys)
    assert rc == 8 and result["error"] == "unsafe_archive", result
    assert (dest / ".gpu-stack-stage.json").read_text() == before
    assert_staged(dest, model)
    assert not list(tmp_path.rglob("escape.txt")) and not list(volume.rglob("escape.txt"))


def test_zip_traversal_is_refused_before_any_write(fileserver, volume, tmp_path, capsys):
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("llama/config.json", "{}")
        zf.writestr("../../escape.txt", "evil")
    url = fileserver.add_file("evil.zip", path)
    rc, result, _err = run_cli(_args(url, volume / "m"), capsys)
    assert rc == 8 and "escape" in result["message"]
    assert not (volume / ".gpu-stack-staging" / "m" / "config.json").exists()
    assert not list(tmp_path.rglob("escape.txt"))
