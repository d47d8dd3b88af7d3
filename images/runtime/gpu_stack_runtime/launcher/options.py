"""gpu-stack-launch's options: every one also settable from the environment.

A RayCluster renders the plan as environment variables (``GPU_STACK_*``) or as
arguments; an argument wins over its variable. Extra vLLM arguments follow ``--`` or
come from ``GPU_STACK_VLLM_EXTRA_ARGS`` (shell-quoted), never including the API key.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Mapping

from gpu_stack_runtime.common import contract
from gpu_stack_runtime.launcher.errors import LaunchError
from gpu_stack_runtime.launcher.ray_cluster import DEFAULT_RAY_PORT
from gpu_stack_runtime.launcher.vllm_args import ServeConfig

ENV_PREFIX = "GPU_STACK_"

# (flag, env name, type, default, help) for the serving options of `head`/`check-args`
_SERVE_OPTIONS = (
    ("--model-dir", "MODEL_DIR", str, None, "model directory on the shared volume"),
    ("--served-model-name", "SERVED_MODEL_NAME", str, None, "model name clients ask for"),
    ("--tensor-parallel-size", "TENSOR_PARALLEL_SIZE", int, 1, "TP: GPUs per node"),
    ("--pipeline-parallel-size", "PIPELINE_PARALLEL_SIZE", int, 1, "PP: nodes"),
    ("--max-model-len", "MAX_MODEL_LEN", int, None, "context length"),
    ("--gpu-memory-utilization", "GPU_MEMORY_UTILIZATION", float, 0.9, "fraction per GPU"),
    ("--host", "HOST", str, "0.0.0.0", "API listen address"),
    ("--port", "PORT", int, 8000, "API port"),
)


def _env_value(environ: Mapping[str, str], var: str, kind, default):
    raw = environ.get(var)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError as exc:
        raise LaunchError(f"{var}={raw!r} is not a valid {kind.__name__}") from exc


def _env_default(environ: Mapping[str, str], name: str, kind, default):
    return _env_value(environ, ENV_PREFIX + name, kind, default)


def _add_serve_options(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    group = parser.add_argument_group("serving (env GPU_STACK_<NAME>)")
    for flag, env, kind, default, text in _SERVE_OPTIONS:
        group.add_argument(flag, type=kind, default=_env_default(environ, env, kind, default),
                           help=f"{text} [{ENV_PREFIX}{env}]")
    group.add_argument("--api-key-file", default=environ.get(ENV_PREFIX + "API_KEY_FILE"),
                       help="file holding the API key (a mounted Secret); passed to vLLM "
                            "as VLLM_API_KEY [GPU_STACK_API_KEY_FILE]")
    group.add_argument("--metrics-key-file",
                       default=environ.get(ENV_PREFIX + "METRICS_KEY_FILE"),
                       help="file holding Prometheus' key: it opens GET /metrics and "
                            "nothing else [GPU_STACK_METRICS_KEY_FILE]")


def _add_ray_options(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    group = parser.add_argument_group("ray")
    group.add_argument("--ray-port", type=int,
                       default=_env_value(environ, "RAY_PORT", int, DEFAULT_RAY_PORT),
                       help="GCS port of a head this launcher starts [RAY_PORT]")
    group.add_argument("--ray-address", default=environ.get("RAY_ADDRESS") or None,
                       help="GCS address HOST:PORT (head: to wait on; worker: to join) "
                            "[RAY_ADDRESS]")
    group.add_argument("--num-gpus", type=int,
                       default=_env_value(environ, contract.LAUNCH_NUM_GPUS_ENV, int, None),
                       help="GPUs this Ray node offers when no KubeRay command is given "
                            "[GPU_STACK_NUM_GPUS]")
    group.add_argument("--ray-arg", action="append", default=[], metavar="ARG",
                       help="extra argument for 'ray start' (repeatable)")
    group.add_argument("--stop-grace", type=float,
                       default=_env_default(environ, "STOP_GRACE", float, 30.0),
                       help="seconds a child gets after SIGTERM [GPU_STACK_STOP_GRACE]")


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="gpu-stack-launch",
        description="Entrypoint of the Ray/vLLM serving pods of llmops.gpu_stack.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    head = sub.add_parser("head", help="start the Ray head, wait for the GPUs, run vLLM")
    _add_serve_options(head, environ)
    _add_ray_options(head, environ)
    head.add_argument("--no-ray-start", dest="ray_start", action="store_false",
                      default=environ.get(ENV_PREFIX + "RAY_START", "1").lower() not in
                      {"0", "false", "no", "off"},
                      help="do not start Ray; wait on an existing cluster at --ray-address "
                           "[GPU_STACK_RAY_START=0]")
    head.add_argument("--gpu-timeout", type=float,
                      default=_env_default(environ, "GPU_TIMEOUT", float, 900.0),
                      help="seconds to wait for the GPUs [GPU_STACK_GPU_TIMEOUT]")
    head.add_argument("--progress-interval", type=float,
                      default=_env_default(environ, "PROGRESS_INTERVAL", float, 5.0),
                      help="seconds between progress lines [GPU_STACK_PROGRESS_INTERVAL]")
    head.add_argument("--dry-run", action="store_true",
                      help="print the planned commands as JSON and exit")
    head.add_argument("vllm_extra", nargs="*", metavar="-- VLLM_ARG",
                      help="extra vLLM arguments after '--' [GPU_STACK_VLLM_EXTRA_ARGS]")

    serve = sub.add_parser("serve", help="run vLLM alone, no Ray: the multiprocessing "
                           "executor, every GPU of the replica inside this pod")
    _add_serve_options(serve, environ)
    serve.add_argument("--stop-grace", type=float,
                       default=_env_default(environ, "STOP_GRACE", float, 30.0),
                       help="seconds vLLM gets after SIGTERM [GPU_STACK_STOP_GRACE]")
    serve.add_argument("--dry-run", action="store_true",
                       help="print the planned command as JSON and exit")
    serve.add_argument("vllm_extra", nargs="*", metavar="-- VLLM_ARG",
                       help="extra vLLM arguments after '--' [GPU_STACK_VLLM_EXTRA_ARGS]")

    worker = sub.add_parser("worker", help="join the Ray cluster (ray start --block)")
    _add_ray_options(worker, environ)
    worker.add_argument("--dry-run", action="store_true",
                        help="print the planned command as JSON and exit")

    check = sub.add_parser("check-args",
                           help="parse the production vLLM command with vLLM's own parser")
    _add_serve_options(check, environ)
    check.add_argument("--executor", choices=("ray", "mp"), default="ray",
                       help="the executor of the command line: ray (head) or mp (serve)")
    check.add_argument("vllm_extra", nargs="*", metavar="-- VLLM_ARG")

    health = sub.add_parser("healthcheck", help="exit 0 when vLLM's /health answers 200")
    health.add_argument("--port", type=int, default=_env_default(environ, "PORT", int, 8000))
    health.add_argument("--timeout", type=float, default=5.0)
    return parser


def serve_config(args: argparse.Namespace, environ: Mapping[str, str],
                 executor: str = "ray") -> ServeConfig:
    """The validated ServeConfig from parsed head/serve/check-args options."""
    missing = [f"--{n} / {ENV_PREFIX}{e}" for n, e in
               (("model-dir", "MODEL_DIR"), ("served-model-name", "SERVED_MODEL_NAME"))
               if not getattr(args, n.replace("-", "_"))]
    if missing:
        raise LaunchError("missing required options: " + ", ".join(missing))
    extra = shlex.split(environ.get(ENV_PREFIX + "VLLM_EXTRA_ARGS", "")) + list(args.vllm_extra)
    return ServeConfig(
        model_dir=args.model_dir,
        served_model_name=args.served_model_name,
        tensor_parallel_size=args.tensor_parallel_size,
        pipeline_parallel_size=args.pipeline_parallel_size,
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
        host=args.host,
        port=args.port,
        executor=executor,
        extra_args=tuple(extra),
    ).validate()


def read_api_key(path: str | None) -> str | None:
    """The API key from a mounted Secret file (trailing newline dropped), or None."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            key = fh.read().strip()
    except OSError as exc:
        raise LaunchError(f"cannot read the API key file {path}: {exc.strerror}") from exc
    if not key:
        raise LaunchError(f"the API key file {path} is empty")
    return key
