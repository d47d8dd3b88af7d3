"""Pure logic of the stager: paths, manifests, digests, retry, progress, archive names."""

from __future__ import annotations

import hashlib
import json

import pytest
from gpu_stack_runtime.stager.archive import ArchiveSource, link_target
from gpu_stack_runtime.stager.digest import MultiHasher, file_digests, mismatches
from gpu_stack_runtime.stager.errors import (
    ConfigError,
    TransferError,
    TransientError,
    UnsafeArchiveError,
)
from gpu_stack_runtime.stager.model import load_manifest, safe_relpath
from gpu_stack_runtime.stager.progress import Progress, human_bytes
from gpu_stack_runtime.stager.retry import MAX_DELAY, backoff, retry_call


@pytest.mark.parametrize(("name", "expected"), [
    ("config.json", "config.json"),
    ("./a//b/c.bin", "a/b/c.bin"),
    ("tok/./tokenizer.json", "tok/tokenizer.json"),
])
def test_safe_relpath_normalises(name, expected):
    assert safe_relpath(name) == expected


@pytest.mark.parametrize("name", ["", "/etc/passwd", "../x", "a/../../x", "a/..", "C:\\x",
                                  "a\\b", "a\0b", ".", "./"])
def test_safe_relpath_refuses_escapes(name):
    with pytest.raises(UnsafeArchiveError):
        safe_relpath(name)


def test_manifest_json_and_sha256sum_forms():
    digest = hashlib.sha256(b"x").hexdigest()
    doc = load_manifest(json.dumps({"files": [{"path": "a/b.bin", "size": 1, "sha256": digest}]}),
                        "m.json")
    assert doc == {"a/b.bin": {"size": 1, "sha256": digest}}
    text = f"# comment\n{digest.upper()}  a.bin\n{digest} *b.bin\n"
    assert load_manifest(text, "SUMS") == {"a.bin": {"size": None, "sha256": digest},
                                           "b.bin": {"size": None, "sha256": digest}}


@pytest.mark.parametrize("text", [
    '{"files": []}',
    '{"files": [{"path": "a", "sha256": "zz"}]}',
    '{"files": [{"path": "../a", "sha256": "%s"}]}' % ("0" * 64),
    '{"nofiles": 1}',
    "{not json",
    "deadbeef\n",
])
def test_bad_manifests_are_config_errors(text):
    with pytest.raises(ConfigError):
        load_manifest(text, "m")


def test_git_blob_sha1_matches_git():
    # `printf 'hello\n' | git hash-object --stdin`
    h = MultiHasher(["git-sha1"], 6)
    h.update(b"hello\n")
    assert h.hexdigests()["git-sha1"] == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert h.hexdigests()["sha256"] == hashlib.sha256(b"hello\n").hexdigest()


def test_hashing_a_resumed_prefix_equals_hashing_at_once(tmp_path):
    data = bytes(range(256)) * 5000
    path = tmp_path / "f"
    path.write_bytes(data[:70_000])
    h = MultiHasher(["md5"], len(data))
    h.update_from_file(path, 70_000)
    h.update(data[70_000:])
    path.write_bytes(data)
    assert h.hexdigests() == file_digests(path, ["md5"])
    assert mismatches({"md5": hashlib.md5(data).hexdigest().upper()}, h.hexdigests()) == []
    assert mismatches({"md5": "0" * 32}, h.hexdigests()) == ["md5"]
    with pytest.raises(ValueError):
        MultiHasher(["crc64"], 0)


def test_retry_call_retries_transient_errors_then_gives_up():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("reset")
        return "ok"

    assert retry_call(flaky, retries=5, what="x", sleep=sleeps.append) == "ok"
    assert len(calls) == 3 and len(sleeps) == 2

    attempts = []

    def broken():
        attempts.append(1)
        raise TransientError("down")

    with pytest.raises(TransferError, match="giving up after 2 retries") as err:
        retry_call(broken, retries=2, what="x", sleep=lambda s: None)
    assert len(attempts) == 3  # the first attempt and 2 retries
    assert err.value.__cause__.details["attempts"] == 3  # counted as common/retry.py counts


def test_retry_call_does_not_retry_other_errors():
    calls = []

    def refused():
        calls.append(1)
        raise ConfigError("bad")

    with pytest.raises(ConfigError):
        retry_call(refused, retries=5, what="x", sleep=lambda s: None)
    assert calls == [1]


def test_backoff_counts_attempts_like_the_common_strategy_and_is_capped():
    strategy = backoff(10, base=1.0)
    assert strategy.tries == 11  # --retries 10: one attempt and 10 retries
    delays = list(strategy)
    assert len(delays) == 10 and all(0 <= d <= MAX_DELAY for d in delays)
    assert max(delays) > 0


def test_progress_line_reports_bytes_rate_and_eta():
    now = [0.0]
    p = Progress(total_bytes=1000 << 20, total_files=4, interval=0, clock=lambda: now[0])
    p.add(100 << 20, transferred=False)  # already on disk: counts as done, not as rate
    now[0] = 10.0
    p.add(200 << 20)
    p.file_done()
    line = p.line()
    assert "300.0 MiB / 1000.0 MiB (30.0%)" in line
    assert "20.0 MiB/s" in line and "ETA 35s" in line and "files 1/4" in line
    now[0] = 20.0
    assert "ETA unknown" in p.line()  # nothing moved during the last interval
    assert human_bytes(512) == "512 B" and human_bytes(3 << 30) == "3.0 GiB"


def test_archive_member_targets_and_links():
    src = ArchiveSource.__new__(ArchiveSource)
    src.strip = 1
    assert src.target("llama/config.json") == "config.json"
    assert src.target("llama/") is None and src.target("llama") is None
    for bad in ("../x", "/abs", "llama/../../x", "llama/a/../../.."):
        with pytest.raises(UnsafeArchiveError):
            src.target(bad)
    assert link_target("tok/vocab.json", "../shared/vocab.json") == "shared/vocab.json"
    for bad in ("../../x", "/etc/passwd"):
        with pytest.raises(UnsafeArchiveError):
            link_target("tok/vocab.json", bad)


def test_archive_format_from_url():
    def fmt(url):
        return ArchiveSource(url, client=None).fmt

    assert fmt("https://h/m.tar.gz?sig=1") == "tar.gz" and fmt("https://h/m.tgz") == "tar.gz"
    assert fmt("https://h/m.zip") == "zip" and fmt("https://h/m.tar") == "tar"
    with pytest.raises(ConfigError, match="--archive-format"):
        fmt("https://h/model")
