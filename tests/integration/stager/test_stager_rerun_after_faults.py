"""After each transfer fault, a rerun converges and the run after it changes nothing.

Each case injects one fault of the file server (a connection cut the stager gives up on,
a partial file damaged on the volume, bytes corrupted on the wire, the source changing
mid-transfer) and runs the stager into it. The fault then is gone (the server's faults
fire once); the rerun must stage the model (every byte and the marker checked against
the source; a fault the run itself recovers from needs none) and one more run must
change nothing and fetch no byte."""

from __future__ import annotations

import pytest
from stagerkit import assert_staged, run_cli, write_manifest

pytestmark = pytest.mark.slow


def _big(model) -> str:
    return max(model, key=lambda n: model[n].stat().st_size)


def _args(fileserver, manifest, dest, *extra):
    return ["--source", "http", "--url", f"{fileserver.url}/files/m", "--manifest",
            str(manifest), "--dest", str(dest), *extra]


def _gave_up(fileserver, model, manifest, dest, capsys):
    fileserver.cut_at[f"m/{_big(model)}"] = 1 << 20
    rc, _result, err = run_cli(_args(fileserver, manifest, dest, "--retries", "0"), capsys)
    assert rc == 9, err  # the transfer gave up: a partial file stays in staging
    return False


def _damaged_partial(fileserver, model, manifest, dest, capsys):
    _gave_up(fileserver, model, manifest, dest, capsys)
    part = dest.parent / ".gpu-stack-staging" / dest.name / f"{_big(model)}.part"
    data = bytearray(part.read_bytes())
    data[1000] ^= 0xFF
    part.write_bytes(bytes(data))
    return False


def _corrupt_on_the_wire(fileserver, model, manifest, dest, capsys):
    """Found by the digest and fetched again within the run itself."""
    fileserver.corrupt_at[f"m/{_big(model)}"] = 12345
    rc, _result, err = run_cli(_args(fileserver, manifest, dest), capsys)
    assert rc == 0 and "digest mismatch" in err, err
    return True


def _source_changed(fileserver, model, manifest, dest, capsys):
    assert run_cli(_args(fileserver, manifest, dest), capsys)[0] == 0
    big = _big(model)
    new = bytearray(model[big].read_bytes())
    new[0] ^= 1
    model[big].write_bytes(bytes(new))  # a new version, published with its manifest
    write_manifest(manifest, model)
    fileserver.change_at[f"m/{big}"] = (100_000, b"something else entirely")
    rc, result, err = run_cli(_args(fileserver, manifest, dest), capsys)
    assert rc == 7 and result["error"] == "source_changed", err
    # the server's file was rewritten under the transfer; the publisher puts back the
    # version its manifest lists (the fault is over)
    model[big].write_bytes(bytes(new))
    return False


@pytest.mark.parametrize("fault", [_gave_up, _damaged_partial, _corrupt_on_the_wire,
                                   _source_changed],
                         ids=["gave-up", "damaged-partial", "corrupt-on-the-wire",
                              "source-changed"])
def test_a_rerun_converges_after_the_fault_and_the_next_changes_nothing(
        fault, fileserver, model, volume, tmp_path, capsys):
    for name, path in model.items():
        fileserver.add_file(f"m/{name}", path)
    manifest = write_manifest(tmp_path / "manifest.json", model)
    dest = volume / "m"
    staged = fault(fileserver, model, manifest, dest, capsys)
    assert not (fileserver.cut_at or fileserver.corrupt_at or fileserver.change_at)

    if not staged:
        rc, result, err = run_cli(_args(fileserver, manifest, dest), capsys)
        assert rc == 0 and result["changed"] is True, err
    assert_staged(dest, model)

    served = fileserver.total_served()
    rc, result, err = run_cli(_args(fileserver, manifest, dest), capsys)
    assert rc == 0 and result["changed"] is False, err
    assert fileserver.total_served() == served  # not one byte fetched again
    assert_staged(dest, model)
