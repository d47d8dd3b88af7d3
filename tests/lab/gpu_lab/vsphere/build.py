"""Build the lab's vSphere simulator: govmomi's simulator (Debian package) + our Go extension.

The extension files under ``tests/lab/vcsim/ext/`` are compiled into package ``simulator``
with ``go build -overlay``; ``patches.json`` renames the originals they hook, in copies of
the upstream files. The binary is cached in one build directory shared by every lab home
(``$GPU_LAB_BUILD_DIR``, else ``<repo>/.lab/build``), keyed by a hash of every input, so
it is rebuilt only when a source changes, not once per lab (each test lab has a home of
its own). Builds running at once each work in their own directory and rename the binary
into place atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from gpu_lab.vsphere.paths import REPO_ROOT

VCSIM_SRC = Path(__file__).resolve().parents[2] / "vcsim"
GOVMOMI_REL = Path("src/github.com/vmware/govmomi")


class BuildError(RuntimeError):
    """The simulator could not be built."""


def gocode_root() -> Path:
    """Where Debian's golang-github-vmware-govmomi-dev puts the Go sources."""
    return Path(os.environ.get("GPU_LAB_GOCODE", "/usr/share/gocode"))


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "go not found: apt-get install -y golang-go golang-github-vmware-govmomi-dev"
        )
    return go


def _sim_dir() -> Path:
    sim = gocode_root() / GOVMOMI_REL / "simulator"
    if not (sim / "simulator.go").is_file():
        raise BuildError(
            f"govmomi simulator sources not found under {sim}: "
            "apt-get install -y golang-github-vmware-govmomi-dev"
        )
    return sim


def _patches() -> dict[str, list[list[str]]]:
    data = json.loads((VCSIM_SRC / "patches.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _source_hash(go: str, sim: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(VCSIM_SRC.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(VCSIM_SRC).as_posix().encode())
            digest.update(path.read_bytes())
    for name in sorted(_patches()):
        digest.update((sim / name).read_bytes())
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=True)
    digest.update(version.stdout.encode())
    return digest.hexdigest()[:16]


def _write_overlay(work: Path, sim: Path) -> Path:
    replace: dict[str, str] = {}
    patched = work / "patched"
    patched.mkdir(parents=True, exist_ok=True)
    for name, edits in _patches().items():
        text = (sim / name).read_text()
        for old, new in edits:
            hits = text.count(old)
            if hits != 1:
                raise BuildError(
                    f"patch for {name} matched {hits} times (expected 1): {old!r}; "
                    "the govmomi sources changed, update tests/lab/vcsim/patches.json"
                )
            text = text.replace(old, new)
        target = patched / name
        target.write_text(text)
        replace[str(sim / name)] = str(target)
    for ext in sorted((VCSIM_SRC / "ext").glob("*.go")):
        if (sim / ext.name).exists():
            raise BuildError(f"extension file {ext.name} would shadow an upstream file")
        replace[str(sim / ext.name)] = str(ext)
    overlay = work / "overlay.json"
    overlay.write_text(json.dumps({"Replace": replace}, indent=1))
    return overlay


def build(force: bool = False) -> Path:
    """Return the path of an up-to-date simulator binary, building it when needed."""
    go, sim = _go(), _sim_dir()
    out_dir = build_dir() / "vcsim"
    binary = out_dir / f"gpulab-vcsim-{_source_hash(go, sim)}"
    if binary.is_file() and not force:
        return binary
    work = out_dir / f"work-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        return _build(go, sim, out_dir, work, binary)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build_dir() -> Path:
    """The build cache every lab home shares."""
    return Path(os.environ.get("GPU_LAB_BUILD_DIR") or REPO_ROOT / ".lab" / "build")


def _build(go: str, sim: Path, out_dir: Path, work: Path, binary: Path) -> Path:
    overlay = _write_overlay(work, sim)
    env = dict(os.environ)
    env.update(
        GO111MODULE="off",
        GOPATH=str(gocode_root()),
        CGO_ENABLED="0",
        GOFLAGS="",
        GOCACHE=env.get("GOCACHE") or str(out_dir / "go-cache"),
    )
    mains = sorted(str(p) for p in VCSIM_SRC.glob("*.go"))
    tmp = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")
    proc = subprocess.run(
        [go, "build", "-overlay", str(overlay), "-o", str(tmp), *mains],
        env=env, capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise BuildError(f"go build failed:\n{proc.stderr.strip()}")
    tmp.rename(binary)
    for old in out_dir.glob("gpulab-vcsim-*"):
        if old != binary and not old.name.endswith(".tmp"):
            old.unlink(missing_ok=True)  # a binary of older sources
    return binary
