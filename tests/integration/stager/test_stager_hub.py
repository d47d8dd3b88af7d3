"""Hugging Face Hub source: huggingface_hub's own client lists the repo from our server
(GET /api/models/<repo>/revision/<rev>?blobs=true), downloads use resolve/<commit>/<file>."""

from __future__ import annotations

import json
import random
import signal
import threading
import time

import pytest
from fileserver import HubRepo
from stagerkit import (
    assert_staged,
    assert_verify_repairs,
    run_cli,
    spawn_cli,
    staged_bytes_on_disk,
    wait_journalled,
)

pytestmark = pytest.mark.slow

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_TestSecretToken_9f8e7d6c5b4a"


@pytest.fixture
def repo(fileserver, model):
    r = HubRepo(model, COMMIT, branches=("main", "v1"))
    fileserver.add_repo("org/tiny-llama", r)
    return r


def _args(fileserver, dest, *extra):
    return ["--source", "hub", "--repo-id", "org/tiny-llama", "--endpoint", fileserver.url,
            "--dest", str(dest), *extra]


def _file_bytes(fileserver):
    return sum(n for k, n in fileserver.served.items() if k.startswith("org/"))


def test_fresh_stage_then_rerun_is_a_noop(repo, model, fileserver, volume, capsys):
    dest = volume / "tiny"
    rc, result, err = run_cli(_args(fileserver, dest), capsys)
    assert rc == 0 and result["changed"], err
    doc = assert_staged(dest, model)
    assert doc["revision"] == COMMIT  # "main" resolved to the commit and pinned
    by_path = {f["path"]: f for f in doc["files"]}
    assert by_path["config.json"]["verified"] == ["git-sha1"]
    assert by_path["model-00001-of-00003.safetensors"]["verified"] == ["sha256"]
    paths = [p for _m, p, _h in fileserver.requests]
    assert "/api/models/org/tiny-llama/revision/main" in paths
    assert all(f"/resolve/{COMMIT}/" in p for p in paths if "/resolve/" in p)

    before = _file_bytes(fileserver)
    t0 = time.monotonic()
    rc, result, _err = run_cli(_args(fileserver, dest), capsys)
    assert rc == 0 and result["changed"] is False and time.monotonic() - t0 < 2
    assert _file_bytes(fileserver) == before


def test_same_size_damage_is_found_by_verify_and_repaired(
        repo, model, fileserver, volume, capsys):
    dest = volume / "tiny"
    assert run_cli(_args(fileserver, dest), capsys)[0] == 0
    before = _file_bytes(fileserver)
    victim = "model-00002-of-00003.safetensors"
    assert_verify_repairs(_args(fileserver, dest), dest, victim, model, capsys)
    assert _file_bytes(fileserver) - before == model[victim].stat().st_size


def test_allow_and_ignore_patterns(repo, model, fileserver, volume, capsys):
    dest = volume / "tiny"
    rc, result, _err = run_cli(_args(fileserver, dest, "--allow-pattern", "*.json",
                                     "--allow-pattern", "tok/*", "--ignore-pattern", "config.*"),
                               capsys)
    assert rc == 0
    assert [f["path"] for f in result["marker"]["files"]] == ["tok/tokenizer.json"]
    assert sorted(p.name for p in dest.rglob("*") if p.is_file()) == [
        ".gpu-stack-stage.json", "tokenizer.json"]


def test_unknown_revision_and_repo(repo, fileserver, volume, capsys):
    rc, result, _err = run_cli(_args(fileserver, volume / "a", "--revision", "does-not-exist"),
                               capsys)
    assert rc == 4 and "revision 'does-not-exist' not found" in result["message"]
    rc, result, _err = run_cli(["--source", "hub", "--repo-id", "org/nope", "--endpoint",
                                fileserver.url, "--dest", str(volume / "b")], capsys)
    assert rc == 4 and result["error"] == "not_found"
    assert list(volume.iterdir()) == []


def test_private_repo_token_from_file_never_logged(fileserver, model, volume, tmp_path):
    fileserver.add_repo("org/tiny-llama", HubRepo(model, COMMIT, token=TOKEN))
    fileserver.lfs_redirect = True  # LFS files come from a "CDN" on another host name
    dest = volume / "private"
    proc = spawn_cli(_args(fileserver, dest, "--log-level", "DEBUG"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3 and json.loads(out)["error"] == "credentials"
    assert "no token was given" in err

    token_file = tmp_path / "secret" / "token"
    token_file.parent.mkdir()
    token_file.write_text(TOKEN + "\n")
    proc = spawn_cli(_args(fileserver, dest, "--token-file", str(token_file),
                           "--log-level", "DEBUG"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert_staged(dest, model)
    assert TOKEN not in out and TOKEN not in err
    assert TOKEN not in (dest / ".gpu-stack-stage.json").read_text()
    headers = [(p, {k.lower(): v for k, v in h.items()}) for _m, p, h in fileserver.requests]
    cdn = [h for p, h in headers if p.startswith("/cdn/")]
    assert cdn and not any("authorization" in h for h in cdn)  # not leaked to the CDN
    resolve = [h for p, h in headers if "/resolve/" in p]
    api = [h for p, h in headers if p.startswith("/api/")]
    assert api[-1]["authorization"] == resolve[-1]["authorization"] == f"Bearer {TOKEN}"

    proc = spawn_cli(_args(fileserver, volume / "p2"), env={"HF_TOKEN": TOKEN})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and TOKEN not in out + err


def test_killed_transfer_resumes(repo, model, fileserver, volume):
    name = max(model, key=lambda n: model[n].stat().st_size)
    at = random.randrange(1, model[name].stat().st_size)
    fileserver.stall_at[f"org/tiny-llama/{name}"] = (at, threading.Event())
    dest = volume / "tiny"
    proc = spawn_cli(_args(fileserver, dest, "--jobs", "2"))
    assert fileserver.stalled.wait(30)
    # all but the stalled file is staged, and still nothing is visible at the final path
    wait_journalled(volume / ".gpu-stack-staging" / "tiny", set(model) - {name})
    assert not dest.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    fileserver.stall_at.clear()
    on_disk = staged_bytes_on_disk(volume / ".gpu-stack-staging" / "tiny")
    before = _file_bytes(fileserver)
    proc = spawn_cli(_args(fileserver, dest))
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    total = sum(p.stat().st_size for p in model.values())
    assert _file_bytes(fileserver) - before == total - on_disk, f"stall at {at} of {name}"
    assert_staged(dest, model)


def test_corrupt_partial_refetched_and_changed_file_reported(
        repo, model, fileserver, volume, capsys):
    name = max(model, key=lambda n: model[n].stat().st_size)
    key = f"org/tiny-llama/{name}"
    fileserver.cut_at[key] = 500_000
    assert run_cli(_args(fileserver, volume / "t", "--retries", "0"), capsys)[0] == 9
    part = volume / ".gpu-stack-staging" / "t" / f"{name}.part"
    part.write_bytes(b"\0" * part.stat().st_size)  # same length, wrong bytes
    rc, _r, err = run_cli(_args(fileserver, volume / "t"), capsys)
    assert rc == 0 and "digest mismatch" in err
    assert_staged(volume / "t", model)

    # The bytes behind a pinned commit change (a broken mirror): reported, never published.
    fileserver.change_at[key] = (10, b"x" * model[name].stat().st_size)
    rc, result, err = run_cli(_args(fileserver, volume / "u"), capsys)
    assert rc == 7 and result["error"] == "source_changed", err
    assert not (volume / "u").exists()
