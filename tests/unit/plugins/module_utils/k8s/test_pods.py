"""The one early end of waits on pods: the reason, the message and the grace per reason."""

from __future__ import annotations

import pytest
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.errors import (
    InvalidInputError,
    OperationFailedError,
    WaitTimeout,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.common.wait import (
    WaitStatus,
    wait_for,
)
from ansible_collections.llmops.gpu_stack.plugins.module_utils.k8s.pods import (
    PodFaults,
    PodWatch,
    stuck_reason,
)

from .fake_client import FakeClock

PULL_ERROR = ('rpc error: code = Unknown desc = pinging container registry r.invalid: '
              'dial tcp: lookup r.invalid: no such host')


def _pod(name="p", waiting=None, scheduled=None, ready=False, phase="Pending", uid=None,
         last_exit=None, restarts=0, init=False):
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if scheduled is not None:
        conditions.append({"type": "PodScheduled", "status": "False",
                           "reason": "Unschedulable", "message": scheduled})
    container = {"name": "main", "restartCount": restarts,
                 "state": {"waiting": waiting} if waiting else {"running": {}}}
    if last_exit is not None:
        container["lastState"] = {"terminated": {"exitCode": last_exit, "reason": "Error"}}
    key = "initContainerStatuses" if init else "containerStatuses"
    status = {"phase": phase, "conditions": conditions}
    if waiting is not None or ready or last_exit is not None:
        status[key] = [container]
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid or f"uid-{name}"},
            "status": status}


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                                    "CrashLoopBackOff", "CreateContainerConfigError",
                                    "CreateContainerError"])
def test_each_waiting_reason_is_named_with_its_message(reason):
    found = stuck_reason(_pod(waiting={"reason": reason, "message": "the kubelet says why"}))
    assert found == (reason, f"{reason} (container main): the kubelet says why")


def test_unschedulable_carries_the_schedulers_message():
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    assert stuck_reason(_pod(scheduled=message)) == ("Unschedulable", f"Unschedulable: {message}")


@pytest.mark.parametrize("pod", [
    _pod(),  # pending, nothing reported yet
    _pod(waiting={"reason": "ContainerCreating"}),
    _pod(waiting={"reason": "PodInitializing"}),
    _pod(ready=True, phase="Running"),
    _pod(waiting={"reason": "CrashLoopBackOff"}, phase="Failed"),  # finished: the Job decides
])
def test_pods_on_their_way_are_not_stuck(pod):
    assert stuck_reason(pod) is None


def test_init_containers_and_crash_details():
    found = stuck_reason(_pod(waiting={"reason": "CrashLoopBackOff", "message": "back-off 20s"},
                              last_exit=3, restarts=2, init=True, phase="Pending"))
    assert found == ("CrashLoopBackOff", "CrashLoopBackOff (container main), 2 restarts, last "
                     "exit code 3 (Error): back-off 20s")


def test_a_pull_failure_ends_the_wait_after_its_grace_with_the_pull_error():
    clock = FakeClock()
    faults = PodFaults(clock=clock)
    faults.check([_pod(waiting={"reason": "ErrImagePull", "message": PULL_ERROR})], "the Job")
    clock.sleep(9.0)
    backoff = _pod(waiting={"reason": "ImagePullBackOff",
                            "message": 'Back-off pulling image "r.invalid/x:1"'})
    faults.check([backoff], "the Job")  # 9 s: still within the 10 s grace
    clock.sleep(1.0)
    with pytest.raises(OperationFailedError) as err:
        faults.check([backoff], "the Job")
    assert err.value.reason == "ImagePullBackOff" and err.value.details["pod"] == "p"
    assert err.value.msg == (
        'the Job: pod ns/p cannot become ready: ImagePullBackOff (container main): Back-off '
        'pulling image "r.invalid/x:1"; last pull error: ' + PULL_ERROR)


def test_unschedulable_is_given_longer_and_resets_once_scheduled():
    clock = FakeClock()
    faults = PodFaults(clock=clock)
    pending = _pod(scheduled="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    faults.check([pending], "serving")
    clock.sleep(25.0)
    faults.check([_pod()], "serving")  # scheduled after 25 s (an old replica let go)
    faults.check([pending], "serving")  # unschedulable again: the grace starts over
    clock.sleep(29.0)
    faults.check([pending], "serving")
    clock.sleep(1.0)
    with pytest.raises(OperationFailedError, match=r"serving: pod ns/p cannot become ready: "
                       r"Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia"):
        faults.check([pending], "serving")


def test_a_crash_loop_counts_from_the_first_crash_until_ready():
    clock = FakeClock()
    faults = PodFaults(clock=clock)
    crashed = _pod(waiting={"reason": "CrashLoopBackOff", "message": "back-off 10s"},
                   last_exit=1, restarts=1, phase="Running")
    restarted = _pod(phase="Running", last_exit=1, restarts=1)
    faults.check([crashed], "w")
    clock.sleep(15.0)
    faults.check([restarted], "w")  # running again, not ready: the loop goes on
    clock.sleep(5.0)
    with pytest.raises(OperationFailedError, match="CrashLoopBackOff"):
        faults.check([crashed], "w")
    # a pod that became Ready in between starts afresh
    faults = PodFaults(clock=clock)
    faults.check([crashed], "w")
    clock.sleep(15.0)
    faults.check([_pod(ready=True, phase="Running")], "w")
    clock.sleep(10.0)
    faults.check([crashed], "w")


def test_a_replaced_pod_is_a_new_pod():
    clock = FakeClock()
    faults = PodFaults(clock=clock, grace={"ImagePullBackOff": 5.0})
    faults.check([_pod(waiting={"reason": "ImagePullBackOff"}, uid="a")], "w")
    clock.sleep(6.0)
    faults.check([_pod(waiting={"reason": "ImagePullBackOff"}, uid="b")], "w")


def test_the_wait_ends_early_through_wait_for():
    """The check raises out of the common wait long before the wait's own timeout."""
    clock = FakeClock()
    faults = PodFaults(clock=clock)
    pods = [_pod(waiting={"reason": "ImagePullBackOff", "message": "Back-off pulling"})]

    def _check():
        faults.check(pods, "the stager Job")
        return WaitStatus(done=False, missing=("Job finished",))

    with pytest.raises(OperationFailedError, match="ImagePullBackOff"):
        wait_for(_check, timeout=3600, clock=clock, sleep=clock.sleep, interval=1.0)
    assert clock.now < 15
    with pytest.raises(WaitTimeout):  # a pod merely pending still waits to the timeout
        pods[:] = [_pod()]
        wait_for(_check, timeout=60, clock=clock, sleep=clock.sleep, interval=1.0)


class _Cluster:
    """list/logs as K8sClient answers them; a log that cannot be read raises like it."""

    def __init__(self, pods, logs):
        self.pods, self.logs_by_pod, self.log_reads = pods, logs, 0

    def list(self, api_version, kind, namespace=None, label_selector=None):
        assert (kind, namespace, label_selector) == ("Pod", "ns", "job-name=j")
        return self.pods

    def logs(self, pod, namespace, container=None):
        self.log_reads += 1
        found = self.logs_by_pod.get(pod)
        if isinstance(found, Exception):
            raise found
        return found


STAGER_LOG = ("2026-12-06 10:00:00 INFO listing 9 files\n"
              "2026-12-06 10:00:10 INFO progress: 1.0 GiB / 9.8 GiB (10.2%), 40.0 MiB/s, "
              "ETA 225s, files 1/9\n"
              "2026-12-06 10:00:20 INFO progress: 1.4 GiB / 9.8 GiB (14.3%), 41.0 MiB/s, "
              "ETA 210s, files 2/9\n"
              "2026-12-06 10:00:21 INFO fetched model-00002.safetensors\n")


def _job_pod(name, created):
    pod = _pod(name, phase="Running")
    pod["metadata"]["creationTimestamp"] = created
    return pod


def test_progress_reports_carry_the_stagers_last_progress_line():
    cluster = _Cluster([_job_pod("j-old", "2026-12-06T09:00:00Z"),
                        _job_pod("j-new", "2026-12-06T10:00:00Z")],
                       {"j-old": "progress: stale", "j-new": STAGER_LOG})
    watch = PodWatch(cluster, "ns", "job-name=j", "the Job", marker="progress: ")
    reports = []
    report = watch.reporting(lambda status, elapsed: reports.append((status.progress, elapsed)))
    watch.check()
    assert cluster.log_reads == 0  # checks never read logs; only reports do
    report(WaitStatus(done=False, progress="Job j: 1 running, 0 failed"), 30.0)
    assert reports == [("Job j: 1 running, 0 failed; progress: 1.4 GiB / 9.8 GiB (14.3%), "
                        "41.0 MiB/s, ETA 210s, files 2/9", 30.0)]


def test_a_log_not_readable_yet_leaves_the_report_as_it_was():
    cluster = _Cluster([_job_pod("j-1", "t")], {"j-1": InvalidInputError("waiting to start")})
    watch = PodWatch(cluster, "ns", "job-name=j", "the Job", marker="progress: ")
    reports = []
    watch.check()
    watch.reporting(lambda status, elapsed: reports.append(status.progress))(
        WaitStatus(done=False, progress="Job j: 0 running"), 30.0)
    assert reports == ["Job j: 0 running"]
    assert watch.reporting(None) is None


def test_the_watch_ends_the_wait_on_a_stuck_pod():
    stuck = _pod("j-1", waiting={"reason": "CreateContainerConfigError",
                                 "message": 'secret "creds" not found'})
    watch = PodWatch(_Cluster([stuck], {}), "ns", "job-name=j", "the stager Job ns/j",
                     faults=PodFaults(grace={"CreateContainerConfigError": 0.0}))
    with pytest.raises(OperationFailedError, match=r'the stager Job ns/j: pod ns/j-1 cannot '
                       r'become ready: CreateContainerConfigError \(container main\): '
                       r'secret "creds" not found'):
        watch.check()
