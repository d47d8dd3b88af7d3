"""S3 source: boto3 against moto's standalone S3 server, behind a TCP fault proxy."""

from __future__ import annotations

import json
import logging
import random
import signal
import time

import boto3
import pytest
from moto.server import ThreadedMotoServer
from stagerkit import (
    assert_staged,
    assert_verify_repairs,
    run_cli,
    spawn_cli,
    staged_bytes_on_disk,
    wait_journalled,
    write_manifest,
)
from tcpproxy import FaultProxy

pytestmark = pytest.mark.slow

ACCESS_KEY = "AKIASTAGERTESTKEY001"
SECRET_KEY = "stager/Secret+Key/never-in-logs-0042"
MULTIPART = "model-00003-of-00003.safetensors"


@pytest.fixture(scope="module")
def moto():
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    yield server.get_host_and_port()
    server.stop()


@pytest.fixture
def s3(moto, model, tmp_path):
    host, port = moto
    admin = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                         aws_access_key_id="admin", aws_secret_access_key="admin")
    bucket = f"models-{random.randrange(1 << 30)}"
    admin.create_bucket(Bucket=bucket)
    for name, path in model.items():
        if name == MULTIPART:  # ETag "<md5 of md5s>-1": not a digest of the object
            up = admin.create_multipart_upload(Bucket=bucket, Key=f"llama/{name}")
            part = admin.upload_part(Bucket=bucket, Key=f"llama/{name}", PartNumber=1,
                                     UploadId=up["UploadId"], Body=path.read_bytes())
            admin.complete_multipart_upload(
                Bucket=bucket, Key=f"llama/{name}", UploadId=up["UploadId"],
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
        else:
            admin.put_object(Bucket=bucket, Key=f"llama/{name}", Body=path.read_bytes())
    admin.put_object(Bucket=bucket, Key="other/unrelated.bin", Body=b"not part of the model")
    proxy = FaultProxy((host, port))
    creds = tmp_path / "s3-secret"
    creds.mkdir()
    (creds / "AWS_ACCESS_KEY_ID").write_text(ACCESS_KEY)
    (creds / "AWS_SECRET_ACCESS_KEY").write_text(SECRET_KEY + "\n")
    yield {"admin": admin, "bucket": bucket, "proxy": proxy, "creds": str(creds)}
    proxy.stop()


def _args(s3, dest, *extra, creds=True):
    args = ["--source", "s3", "--bucket", s3["bucket"], "--prefix", "llama",
            "--endpoint-url", s3["proxy"].url, "--region", "us-east-1", "--dest", str(dest)]
    if creds:
        args += ["--s3-credentials-dir", s3["creds"]]
    return [*args, *extra]


def _total(model):
    return sum(p.stat().st_size for p in model.values())


def test_fresh_stage_then_rerun_is_a_noop(s3, model, volume, capsys):
    dest = volume / "llama"
    rc, result, err = run_cli(_args(s3, dest), capsys)
    assert rc == 0 and result["changed"], err
    doc = assert_staged(dest, model)
    verified = {f["path"]: f["verified"] for f in doc["files"]}
    assert verified[MULTIPART] == [] and verified["config.json"] == ["md5"]
    assert not (dest / "unrelated.bin").exists()

    sent = s3["proxy"].sent
    t0 = time.monotonic()
    rc, result, _err = run_cli(_args(s3, dest), capsys)
    assert rc == 0 and result["changed"] is False and time.monotonic() - t0 < 2
    assert s3["proxy"].sent - sent < 16_384  # one listing, no object bytes


def test_same_size_damage_is_found_by_verify_and_repaired(s3, model, volume, capsys):
    dest = volume / "llama"
    assert run_cli(_args(s3, dest), capsys)[0] == 0
    sent = s3["proxy"].sent
    assert_verify_repairs(_args(s3, dest), dest, MULTIPART, model, capsys)
    assert s3["proxy"].sent - sent >= model[MULTIPART].stat().st_size  # that object again


def test_manifest_verifies_multipart_objects(s3, model, volume, tmp_path, capsys):
    manifest = write_manifest(tmp_path / "manifest.json", model)
    rc, result, err = run_cli(_args(s3, volume / "m", "--manifest", str(manifest)), capsys)
    assert rc == 0, err
    verified = {f["path"]: f["verified"] for f in result["marker"]["files"]}
    assert verified[MULTIPART] == ["sha256"] and verified["config.json"] == ["md5", "sha256"]


def test_connection_cut_resumes_with_ranged_get(s3, model, volume, capsys):
    s3["proxy"].cut_after = random.randrange(10_000, _total(model) - 10_000)
    rc, _r, err = run_cli(_args(s3, volume / "m", "--jobs", "1"), capsys)
    assert rc == 0, err
    assert_staged(volume / "m", model)
    assert s3["proxy"].sent < _total(model) + 64_000  # nothing re-sent but headers


def test_killed_transfer_resumes_and_resends_only_unfinished(s3, model, volume):
    total = _total(model)
    at = random.randrange(10_000, total - 10_000)
    s3["proxy"].stall_after = at
    dest = volume / "m"
    proc = spawn_cli(_args(s3, dest, "--jobs", "2"))
    assert s3["proxy"].stalled.wait(30)
    staging = volume / ".gpu-stack-staging" / "m"
    # one connection is stalled; the other job stages every other file, and still
    # nothing is at the final path
    wait_journalled(staging, len(model) - 1)
    assert not dest.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    s3["proxy"].release.set()
    untrusted = staging / f"{MULTIPART}.part"  # no digest: its partial bytes are not reused
    on_disk = staged_bytes_on_disk(staging) - (untrusted.stat().st_size
                                               if untrusted.exists() else 0)
    before = s3["proxy"].sent
    proc = spawn_cli(_args(s3, dest))
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    resent = s3["proxy"].sent - before
    assert total - on_disk <= resent < total - on_disk + 64_000, f"stalled at byte {at}"
    assert_staged(dest, model)


def test_object_changed_mid_stage_is_reported(s3, model, volume, capsys):
    dest = volume / "m"
    assert run_cli(_args(s3, dest), capsys)[0] == 0
    before = (dest / ".gpu-stack-stage.json").read_text()
    # A new version of one shard is published; while the stager fetches it, it changes again.
    name = "model-00001-of-00003.safetensors"
    s3["admin"].put_object(Bucket=s3["bucket"], Key=f"llama/{name}", Body=b"v2" * 2_000_000)
    s3["proxy"].stall_after = s3["proxy"].sent + 1_000_000
    proc = spawn_cli(_args(s3, dest, "--jobs", "1"))
    assert s3["proxy"].stalled.wait(30)
    s3["admin"].put_object(Bucket=s3["bucket"], Key=f"llama/{name}", Body=b"v3" * 10)
    s3["proxy"].release.set()  # the connection drops; the ranged retry carries If-Match
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 7 and json.loads(out)["error"] == "source_changed", err
    assert "changed" in err
    assert (dest / ".gpu-stack-stage.json").read_text() == before  # old model intact
    assert (dest / name).read_bytes() == model[name].read_bytes()


def test_corrupt_partial_is_refetched(s3, model, volume, capsys, tmp_path):
    manifest = str(write_manifest(tmp_path / "manifest.json", model))
    s3["proxy"].cut_after = 2_000_000
    assert run_cli(_args(s3, volume / "m", "--retries", "0", "--jobs", "1",
                         "--manifest", manifest), capsys)[0] == 9
    parts = [p for p in (volume / ".gpu-stack-staging" / "m").rglob("*.part") if p.stat().st_size]
    assert parts
    for part in parts:
        data = bytearray(part.read_bytes())
        data[len(data) // 2] ^= 0x55
        part.write_bytes(bytes(data))
    rc, _r, err = run_cli(_args(s3, volume / "m", "--manifest", manifest), capsys)
    assert rc == 0 and "digest mismatch" in err
    assert_staged(volume / "m", model)


def test_unverifiable_partial_is_not_trusted(s3, model, volume, capsys):
    """A multipart object without a manifest has no digest: its partial bytes after the
    last fsync checkpoint are dropped instead of resumed."""
    s3["proxy"].cut_after = 2_000_000
    assert run_cli(_args(s3, volume / "m", "--retries", "0", "--jobs", "1"), capsys)[0] == 9
    part = volume / ".gpu-stack-staging" / "m" / f"{MULTIPART}.part"
    assert part.stat().st_size > 0
    part.write_bytes(b"\0" * part.stat().st_size)
    rc, _r, err = run_cli(_args(s3, volume / "m"), capsys)
    assert rc == 0 and f"{MULTIPART}: resuming" not in err
    assert_staged(volume / "m", model)


def test_missing_credentials_and_unknown_bucket(s3, volume, capsys):
    rc, result, _err = run_cli(_args(s3, volume / "m", creds=False), capsys)
    assert rc == 3 and "AWS_ACCESS_KEY_ID" in result["message"]
    assert s3["proxy"].sent == 0  # refused before any request
    rc, result, _err = run_cli(["--source", "s3", "--bucket", "no-such-bucket", "--endpoint-url",
                                s3["proxy"].url, "--s3-credentials-dir", s3["creds"],
                                "--dest", str(volume / "m")], capsys)
    assert rc == 4 and result["error"] == "not_found"
    assert list(volume.iterdir()) == []


def test_keys_never_in_logs(s3, model, volume):
    proc = spawn_cli(_args(s3, volume / "m", "--log-level", "DEBUG"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    env_run = spawn_cli(_args(s3, volume / "n", "--log-level", "DEBUG", creds=False),
                        env={"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
    out2, err2 = env_run.communicate(timeout=60)
    assert env_run.returncode == 0, err2
    marker = (volume / "m" / ".gpu-stack-stage.json").read_text()
    for text in (out, err, out2, err2, marker):
        assert ACCESS_KEY not in text and SECRET_KEY not in text
    assert json.loads(out)["changed"] is True
