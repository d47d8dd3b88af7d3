"""The launcher's one error type: a message for the pod log and the exit code to use.

The exit codes are part of the controller/runtime contract (``common/contract.py``):
the controller stops waiting for a serving pod that exits with one of them.
"""

from gpu_stack_runtime.common import contract
from gpu_stack_runtime.common.errors import GpuStackError

EXIT_USAGE = contract.LAUNCH_EXIT_USAGE  # bad options or environment: nothing was started
EXIT_MODEL = contract.LAUNCH_EXIT_MODEL  # the model directory is not ready to serve
EXIT_GPUS = contract.LAUNCH_EXIT_GPUS  # the Ray cluster did not hold the planned GPUs in time
EXIT_RAY = contract.LAUNCH_EXIT_RAY  # Ray could not be started or died
EXIT_SIGNAL_BASE = contract.LAUNCH_EXIT_SIGNAL_BASE  # 128 + signal number, as a shell says


class LaunchError(GpuStackError):
    """Raised for any condition that must stop the launcher with a clear message."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code
