"""Benchmark of the model stager on this machine, in one run.

Generates a multi-GB model of random shards, serves it from loopback with the test HTTP
server (sendfile, Range), and prints:
  1. our throughput (HTTP source, fsync'd, verified) vs `dd` write bandwidth to the same
     disk (conv=fdatasync), target >= 90%;
  2. vs the seed's path: `tar -czf` the model, copy the tarball onto the volume (what
     `oc cp` does), `tar -xzf` it there, `sync`; target >= 2x faster end to end. Printed
     with and without the archive creation;
  3. rerun time on the staged model (a new process, as a Job would be), target <= 2 s;
  4. bytes sent twice after a kill at a random byte mid-transfer, target <= 1 file.
Also: our archive source streaming the same tar.gz (no temporary copy).

  .venv-stager/bin/python tests/benchmarks/bench_stager.py [--size-mb 2560] [--shards 5] [--jobs 4]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration" / "stager"))
from fileserver import FileServer  # noqa: E402

RUNTIME = str(REPO / "images" / "runtime")
MB = 1 << 20


def _gen_model(root: Path, size_mb: int, shards: int) -> dict[str, Path]:
    root.mkdir(parents=True)
    files, per = {}, size_mb * MB // shards
    for i in range(shards):
        p = root / f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        with open(p, "wb") as f:
            left = per
            while left:
                n = min(left, 64 * MB)
                f.write(os.urandom(n))
                left -= n
        files[p.name] = p
    (root / "config.json").write_text(json.dumps({"model_type": "llama"}))
    files["config.json"] = root / "config.json"
    return files


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while b := f.read(8 * MB):
            h.update(b)
    return h.hexdigest()


def _stager(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": RUNTIME}
    return subprocess.Popen([sys.executable, "-m", "gpu_stack_runtime.stager",
                             "--progress-interval", "5", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _run_stager(args: list[str]) -> float:
    t0 = time.monotonic()
    proc = _stager(args)
    _out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"stager failed ({proc.returncode}): {err[-2000:]}")
    return time.monotonic() - t0


def _timed(cmd: list[str] | str, **kw) -> float:
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return time.monotonic() - t0


def _dd(vol: Path, total: int) -> float:
    out = vol / "dd.bin"
    secs = _timed(["dd", "if=/dev/zero", f"of={out}", "bs=4M", f"count={total // (4 * MB)}",
                   "conv=fdatasync"])
    out.unlink()
    return (total // (4 * MB)) * 4 * MB / secs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    ap.add_argument("--size-mb", type=int, default=2560)
    ap.add_argument("--shards", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--workdir", default=str(REPO / ".cache" / "bench-stager"))
    ap.add_argument("--skip-seed", action="store_true", help="skip the tar.gz comparison")
    a = ap.parse_args()
    work = Path(a.workdir)
    shutil.rmtree(work, ignore_errors=True)
    src, vol = work / "source", work / "volume"
    vol.mkdir(parents=True)
    print(f"generating {a.shards} shards, {a.size_mb} MiB in {work} ...", flush=True)
    files = _gen_model(src, a.size_mb, a.shards)
    total = sum(p.stat().st_size for p in files.values())
    manifest = work / "manifest.json"
    manifest.write_text(json.dumps({"files": [
        {"path": n, "size": p.stat().st_size, "sha256": _sha256(p)} for n, p in files.items()]}))
    srv = FileServer().start()
    for n, p in files.items():
        srv.add_file(f"m/{n}", p)
    base = ["--source", "http", "--url", f"{srv.url}/files/m", "--manifest", str(manifest),
            "--jobs", str(a.jobs)]
    rows = []
    try:
        dd1 = _dd(vol, total)
        ours = _run_stager([*base, "--dest", str(vol / "ours")])
        dd2 = _dd(vol, total)
        dd_bw = (dd1 + dd2) / 2
        our_bw = total / ours
        rows.append(("dd write bandwidth (conv=fdatasync, mean of 2)", f"{dd_bw / MB:.0f} MiB/s",
                     f"runs: {dd1 / MB:.0f}, {dd2 / MB:.0f} MiB/s"))
        rows.append(("stager, HTTP source, end to end", f"{our_bw / MB:.0f} MiB/s",
                     f"{ours:.1f}s = {our_bw / dd_bw:.0%} of dd (target >= 90%)"))

        rerun = _run_stager([*base, "--dest", str(vol / "ours")])
        rows.append(("rerun on the staged model (new process)", f"{rerun:.2f}s",
                     "target <= 2 s"))

        # Kill at a random byte of a random shard, then rerun.
        shard = random.choice([n for n in files if n.endswith(".safetensors")])
        at = random.randrange(1, files[shard].stat().st_size)
        srv.stall_at[f"m/{shard}"] = (at, threading.Event())
        before = srv.total_served()
        proc = _stager([*base, "--dest", str(vol / "killed")])
        if not srv.stalled.wait(600):
            raise SystemExit("the stall point was never reached")
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        srv.stall_at.clear()
        _run_stager([*base, "--dest", str(vol / "killed")])
        dup = srv.total_served() - before - total
        biggest = max(p.stat().st_size for p in files.values())
        rows.append(("bytes sent twice after a kill", f"{dup} B",
                     f"kill at byte {at} of {shard}; one file = {biggest} B (target <= 1 file)"))
        shutil.rmtree(vol / "killed")

        if not a.skip_seed:
            tgz = work / "seed" / "llama.tar.gz"
            tgz.parent.mkdir()
            create = _timed(["tar", "-czf", str(tgz), "-C", str(src), "."])
            (vol / "seed").mkdir()
            copy = _timed(f"cp {tgz} {vol / 'seed'}/ && sync", shell=True)
            extract = _timed(f"tar -xzf {vol / 'seed' / tgz.name} -C {vol / 'seed'} && sync",
                             shell=True)
            seed_all, seed_no_create = create + copy + extract, copy + extract
            rows.append(("seed: tar -czf + copy to volume + tar -xzf + sync",
                         f"{seed_all:.1f}s", f"create {create:.1f}s, copy {copy:.1f}s, "
                                             f"extract {extract:.1f}s"))
            rows.append(("speed-up vs seed, counting archive creation", f"{seed_all / ours:.1f}x",
                         "target >= 2x"))
            rows.append(("speed-up vs seed, archive already made", f"{seed_no_create / ours:.1f}x",
                         "copy + extract only"))
            url = srv.add_file("llama.tar.gz", tgz)
            arc = _run_stager(["--source", "archive", "--url", url, "--jobs", str(a.jobs),
                               "--unpacked-size", str(total), "--dest", str(vol / "from-tgz")])
            rows.append(("stager, archive source streaming that tar.gz", f"{arc:.1f}s",
                         f"{total / arc / MB:.0f} MiB/s of model, no temporary copy"))
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmodel: {a.shards} shards + config, {total / MB:.0f} MiB, jobs={a.jobs}")
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>12}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
