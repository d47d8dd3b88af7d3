"""Helpers for the stager's integration tests: model files, manifests, running the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from gpu_stack_runtime.stager import cli
from integration.lab.waiting import wait_for

RUNTIME = Path(__file__).resolve().parents[3] / "images" / "runtime"
SHARD = 3 << 20


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bit_rot(path: Path) -> None:
    """Damage one byte of a staged file in place, keeping its size and mtime: what a
    stat check cannot see and only ``--verify`` (digests) finds."""
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def assert_verify_repairs(argv: list[str], dest: Path, victim: str, files: dict[str, Path],
                          capsys) -> dict:
    """After ``bit_rot`` of ``dest/victim``: a plain rerun sees nothing, a ``--verify``
    rerun finds that one file, fetches it again, and the model is whole; the result."""
    bit_rot(dest / victim)
    rc, result, err = run_cli(argv, capsys)
    assert rc == 0 and result["changed"] is False, err  # size and mtime still match
    rc, result, err = run_cli([*argv, "--verify"], capsys)
    assert rc == 0 and result["changed"] is True, err
    assert result["stale_files"] == [victim], result
    assert_staged(dest, files)
    return result


def make_model(root: Path, shards: int = 3, shard_size: int = SHARD) -> dict[str, Path]:
    """A small model: random shards, a config and a tokenizer in a subdirectory."""
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for i in range(shards):
        p = root / f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        p.write_bytes(os.urandom(shard_size + i * 4097))
        files[p.name] = p
    (root / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    files["config.json"] = root / "config.json"
    (root / "tok").mkdir(exist_ok=True)
    (root / "tok" / "tokenizer.json").write_text(json.dumps({"vocab": list(range(300))}))
    files["tok/tokenizer.json"] = root / "tok" / "tokenizer.json"
    return files


def write_manifest(path: Path, files: dict[str, Path]) -> Path:
    rows = [{"path": n, "size": p.stat().st_size, "sha256": sha256(p)} for n, p in files.items()]
    path.write_text(json.dumps({"files": rows}))
    return path


def assert_staged(dest: Path, files: dict[str, Path]) -> dict:
    """Independent check: every byte equals the source, the marker lists the right digests."""
    for name, src in files.items():
        assert (dest / name).read_bytes() == src.read_bytes(), name
    doc = json.loads((dest / ".gpu-stack-stage.json").read_text())
    expected = {n: sha256(p) for n, p in files.items()}
    assert {f["path"]: f["sha256"] for f in doc["files"]} == expected
    leftovers = [p for p in dest.rglob("*") if p.name.endswith((".part", ".part.json"))]
    assert not leftovers and not (dest / ".gpu-stack-journal.json").exists()
    return doc


def run_cli(argv: list[str], capsys, env: dict | None = None, monkeypatch=None):
    """Run the CLI in-process; returns (exit code, result JSON, stderr)."""
    if env and monkeypatch:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
    rc = cli.main(["--progress-interval", "0", "--retries", "3", *argv])
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return rc, (json.loads(lines[-1]) if lines else None), err


def spawn_cli(argv: list[str], env: dict | None = None) -> subprocess.Popen:
    """Run the CLI as its own process (for kill tests and log inspection)."""
    full_env = {**os.environ, **(env or {}),
                "PYTHONPATH": os.pathsep.join([str(RUNTIME), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "gpu_stack_runtime.stager",
                             "--progress-interval", "0.2", "--retries", "2", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)


def staged_bytes_on_disk(staging: Path) -> int:
    """Bytes a killed run left in staging: finished files in the journal plus partials."""
    journal = json.loads((staging / ".gpu-stack-journal.json").read_text()) \
        if (staging / ".gpu-stack-journal.json").exists() else {}
    done = sum((staging / p).stat().st_size for p in journal if not p.startswith("_"))
    parts = sum(p.stat().st_size for p in staging.rglob("*.part"))
    return done + parts


def journalled(staging: Path) -> set[str]:
    """The files a run finished, from its journal (none before it wrote one)."""
    journal = staging / ".gpu-stack-journal.json"
    if not journal.exists():
        return set()
    return {p for p in json.loads(journal.read_text()) if not p.startswith("_")}


def wait_journalled(staging: Path, names: set[str] | int, timeout: float = 30) -> None:
    """Wait until the stager's journal lists ``names`` (or that many files) as finished:
    the positive signal that a run blocked on another file has done all it can."""
    def done() -> bool:
        found = journalled(staging)
        return len(found) >= names if isinstance(names, int) else names <= found

    wait_for(done, f"{names} journalled", timeout,
             context=lambda: f"journalled: {sorted(journalled(staging))}")
