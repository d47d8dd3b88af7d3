"""The serving pods' entrypoint: start or join Ray, wait for the planned GPUs, run vLLM.

Console script: ``gpu-stack-launch`` (see :mod:`gpu_stack_runtime.launcher.cli` for the
command-line and environment contract). Everything imported at module level here is
stdlib only, so the package imports in an image or venv without Ray or vLLM; Ray and
vLLM are imported when they are used.
"""

from gpu_stack_runtime.launcher.errors import LaunchError
from gpu_stack_runtime.launcher.model_dir import MARKER_NAME, check_model_dir

__all__ = ["MARKER_NAME", "LaunchError", "check_model_dir"]
