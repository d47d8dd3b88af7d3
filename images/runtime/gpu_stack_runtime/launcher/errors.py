"""The launcher's one error type: a message for the pod log and the exit code to use."""

EXIT_USAGE = 2  # bad options or environment: nothing was started
EXIT_MODEL = 3  # the model directory is not ready to serve
EXIT_GPUS = 4  # the Ray cluster did not hold the planned GPUs in time
EXIT_RAY = 5  # Ray could not be started or died
EXIT_SIGNAL_BASE = 128  # 128 + signal number, as a shell reports it


class LaunchError(Exception):
    """Raised for any condition that must stop the launcher with a clear message."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code
