"""Local source: files the controller uploaded into the staging area, verified and published."""

from __future__ import annotations

import shutil

import pytest
from stagerkit import assert_staged, run_cli, write_manifest

pytestmark = pytest.mark.slow


@pytest.fixture
def uploaded(model, volume, tmp_path):
    upload = volume / ".gpu-stack-staging" / "llama.upload"
    for name, path in model.items():
        (upload / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, upload / name)
    return {"upload": upload, "manifest": str(write_manifest(tmp_path / "m.json", model))}


def _args(uploaded, volume, *extra):
    return ["--source", "local", "--manifest", uploaded["manifest"],
            "--dest", str(volume / "llama"), *extra]


def test_verify_publish_then_rerun_is_a_noop(uploaded, model, volume, capsys):
    rc, result, err = run_cli(_args(uploaded, volume), capsys)
    assert rc == 0 and result["changed"], err
    doc = assert_staged(volume / "llama", model)
    assert doc["source"] == {"type": "local", "manifest_sha256": doc["source"]["manifest_sha256"]}
    assert not any(p.is_file() for p in uploaded["upload"].rglob("*"))  # moved, not copied
    rc, result, _err = run_cli(_args(uploaded, volume), capsys)
    assert rc == 0 and result["changed"] is False


def test_corrupt_or_missing_upload_is_reported_and_nothing_published(
        uploaded, model, volume, capsys):
    victim = uploaded["upload"] / "config.json"
    victim.write_bytes(victim.read_bytes().replace(b"llama", b"LLAMA"))
    (uploaded["upload"] / "tok" / "tokenizer.json").unlink()
    rc, result, _err = run_cli(_args(uploaded, volume), capsys)
    assert rc == 6 and result["error"] == "integrity"
    assert "tok/tokenizer.json: not uploaded" in result["message"]
    assert not (volume / "llama").exists()
    # The controller uploads the missing file; the corrupt one is caught by its digest.
    shutil.copy(model["tok/tokenizer.json"], uploaded["upload"] / "tok" / "tokenizer.json")
    rc, result, _err = run_cli(_args(uploaded, volume), capsys)
    assert rc == 6 and "config.json: uploaded file has sha256" in result["message"]
    assert not (volume / "llama").exists()
    shutil.copy(model["config.json"], victim)
    rc, result, _err = run_cli(_args(uploaded, volume), capsys)
    assert rc == 0
    assert_staged(volume / "llama", model)


def test_failed_restage_keeps_the_previous_model(uploaded, model, volume, tmp_path, capsys):
    assert run_cli(_args(uploaded, volume), capsys)[0] == 0
    before = (volume / "llama" / ".gpu-stack-stage.json").read_text()
    new = tmp_path / "v2.bin"
    new.write_bytes(b"new weights")
    manifest = write_manifest(tmp_path / "v2.json", {**model, "extra.bin": new})
    rc, result, _err = run_cli(["--source", "local", "--manifest", str(manifest),
                                "--dest", str(volume / "llama")], capsys)
    assert rc == 6 and "extra.bin: not uploaded" in result["message"]
    assert (volume / "llama" / ".gpu-stack-stage.json").read_text() == before
    assert_staged(volume / "llama", model)
    # Upload the new file: unchanged files are reused from the published model (hard links).
    shutil.copy(new, uploaded["upload"] / "extra.bin")
    rc, result, err = run_cli(["--source", "local", "--manifest", str(manifest),
                               "--dest", str(volume / "llama")], capsys)
    assert rc == 0, err
    assert_staged(volume / "llama", {**model, "extra.bin": new})


def test_sha256sum_manifest_without_sizes_is_refused(uploaded, volume, tmp_path, capsys):
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("0" * 64 + "  config.json\n")
    rc, result, _err = run_cli(["--source", "local", "--manifest", str(sums),
                                "--dest", str(volume / "llama")], capsys)
    assert rc == 2 and "needs sizes" in result["message"]
