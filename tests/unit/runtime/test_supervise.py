"""The supervisor with real child processes: exits, signals, escalation, parent death."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from gpu_stack_runtime.launcher.supervise import Supervisor, shell_exit_code


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is not alive
        return fh.read().split(")")[-1].split()[0] != "Z"


@pytest.fixture
def sup():
    lines = []
    supervisor = Supervisor(lines.append, poll_interval=0.05)
    supervisor.lines = lines
    yield supervisor
    supervisor.stop_all(list(supervisor.children), grace=1)


def test_first_child_to_exit_is_reported_with_its_code(sup):
    sup.spawn("slow", ["sleep", "30"], os.environ)
    sup.spawn("quick", ["sh", "-c", "exit 7"], os.environ)
    assert sup.wait_first(["slow", "quick"], timeout=10) == "quick"
    assert sup.exit_codes == {"quick": 7}
    assert sup.running("slow")


def test_stop_escalates_to_sigkill_for_a_child_ignoring_sigterm(sup):
    proc = sup.spawn("stubborn", ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"],
                     os.environ)
    time.sleep(0.3)  # let the shell install its trap
    start = time.monotonic()
    sup.stop("stubborn", grace=0.5)
    assert 0.5 <= time.monotonic() - start < 5
    assert shell_exit_code(sup.exit_codes["stubborn"]) == 128 + signal.SIGKILL
    assert not _alive(proc.pid)
    assert any("ignored SIGTERM" in line for line in sup.lines)


def test_signal_sets_the_stop_request_and_ends_the_wait(sup):
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        sup.install_signal_handlers()
        sup.spawn("child", ["sleep", "30"], os.environ)
        os.kill(os.getpid(), signal.SIGTERM)
        assert sup.wait_first(["child"], timeout=5) is None
        assert sup.stop_signal == signal.SIGTERM
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_children_get_sigterm_when_the_supervising_process_dies(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(f"""
        import os, time
        from gpu_stack_runtime.launcher.supervise import Supervisor
        sup = Supervisor(lambda _: None)
        proc = sup.spawn("grandchild", ["sleep", "60"], os.environ)
        open({str(pid_file)!r}, "w").write(str(proc.pid))
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    parent = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 20
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "supervising process did not start its child"
            time.sleep(0.05)
        grandchild = int(pid_file.read_text())
        assert _alive(grandchild)
        parent.kill()  # SIGKILL: no chance to forward anything
        parent.wait()
        deadline = time.monotonic() + 5
        while _alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(grandchild)
    finally:
        parent.kill()
        parent.wait()


def test_shell_exit_code():
    assert shell_exit_code(0) == 0 and shell_exit_code(3) == 3
    assert shell_exit_code(-signal.SIGTERM) == 143


def test_adopted_orphans_are_stopped_with_the_rest(tmp_path):
    """A child's background process outlives it; the supervisor adopts and stops it."""
    pid_file = tmp_path / "orphan.pid"
    script = textwrap.dedent(f"""
        import os
        from gpu_stack_runtime.launcher.supervise import Supervisor, _orphans_of
        sup = Supervisor(print, adopt_orphans=True, poll_interval=0.05)
        sup.spawn("parent", ["sh", "-c", "sleep 300 & echo $! > {pid_file}"], os.environ)
        assert sup.wait_first(["parent"], timeout=20) == "parent"
        orphan = int(open({str(pid_file)!r}).read())
        assert orphan in _orphans_of(os.getpid()), "not adopted"
        sup.stop_all(["parent"], grace=2)
        print("orphans after stop:", _orphans_of(os.getpid()))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    orphan = int(pid_file.read_text())
    assert "stopping 1 left-over process(es)" in result.stdout
    assert "orphans after stop: []" in result.stdout
    assert not _alive(orphan)
