"""What the stager publishes, the launcher checks by digest: a shard damaged on the volume
with its size and mtime kept is refused at launch, naming the file; restaged, it launches."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from gpu_stack_runtime.launcher import LaunchError, check_model_dir
from gpu_stack_runtime.stager.publish import StagingArea
from gpu_stack_runtime.stager.sources.local import LocalSource
from gpu_stack_runtime.stager.stage import Options, stage


def _model(root: Path) -> dict[str, Path]:
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (root / "model.safetensors").write_bytes(os.urandom(300_000))
    return {p.name: p for p in root.iterdir()}


def _stage(files: dict[str, Path], dest: Path, verify: bool = False):
    area = StagingArea(dest)
    for name, path in files.items():
        area.upload_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, area.upload_dir / name)
    manifest = json.dumps({"files": [
        {"path": n, "size": p.stat().st_size,
         "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for n, p in files.items()]})
    source = LocalSource(area.upload_dir, area.staging, manifest, "test")
    return stage(source, dest, Options(progress_interval=0, verify=verify))


def test_same_size_damage_is_refused_at_launch_and_a_verified_restage_repairs_it(tmp_path):
    files = _model(tmp_path / "src")
    dest = tmp_path / "volume" / "m"
    dest.parent.mkdir()
    assert _stage(files, dest).changed
    assert check_model_dir(dest)["file_count"] == 2

    shard = dest / "model.safetensors"
    st = shard.stat()
    data = bytearray(shard.read_bytes())
    data[4096] ^= 0x01
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(LaunchError, match=r"1 of 2 files do not match the sha256.*"
                                          r"model\.safetensors; stage the model again") as err:
        check_model_dir(dest)
    assert err.value.exit_code == 3

    outcome = _stage(files, dest, verify=True)
    assert outcome.changed and outcome.stale_files == ["model.safetensors"]
    assert shard.read_bytes() == files["model.safetensors"].read_bytes()
    check_model_dir(dest)
