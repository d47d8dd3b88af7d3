"""``gpu-stack-launch``: the serving pods' entrypoint.

Subcommands (``gpu-stack-launch SUBCOMMAND --help`` lists every option and variable):

``head``
    1. validate the options, the API key file and the model directory (config.json,
       weights, the stager's completion marker) before starting anything;
    2. set ``VLLM_HOST_IP``/``NCCL_SOCKET_IFNAME``/``GLOO_SOCKET_IFNAME`` from the pod's
       address, raise the open-files limit (KubeRay's ``ulimit -n 65536``);
    3. start the Ray head (KubeRay's ``$KUBERAY_GEN_RAY_START_CMD`` when present,
       ``--block``), unless ``--no-ray-start``; Ray gets no key in its environment;
    4. wait until the cluster holds TP x PP GPUs, logging "N of M GPUs joined
       (nodes: ...)" every few seconds; on timeout exit 4 with that line;
    5. run vLLM's OpenAI server with the planned arguments (API key via
       ``VLLM_API_KEY``, the metrics key via ``GPU_STACK_METRICS_KEY``, never argv; with
       a key every path but ``/health`` needs it: ``auth.py``) and supervise it and Ray:
       the first to exit stops the other; SIGTERM/SIGINT are forwarded (vLLM first, Ray
       last).
``serve``
    a replica inside one pod, without Ray: the same checks as ``head`` (options, API
    key file, model directory and its marker), the same network variables and keys,
    then vLLM's OpenAI server on its multiprocessing executor (TP x PP GPUs of this
    pod), supervised; SIGTERM/SIGINT are forwarded.
``worker``
    set the same network variables, then run ``ray start --block`` joining the head.
``check-args``
    parse the production vLLM command line with the installed vLLM's own parser.
``healthcheck``
    exit 0 when ``http://127.0.0.1:PORT/health`` answers 200 (container HEALTHCHECK).

Exit codes: 0 done, 2 bad options, 3 model not ready, 4 GPUs missing, 5 Ray failed,
128+N stopped by signal N, otherwise vLLM's own exit code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shlex
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from gpu_stack_runtime.launcher import options
from gpu_stack_runtime.launcher.auth import API_KEY_ENV, METRICS_KEY_ENV
from gpu_stack_runtime.launcher.errors import EXIT_RAY, EXIT_SIGNAL_BASE, LaunchError
from gpu_stack_runtime.launcher.model_dir import check_model_dir
from gpu_stack_runtime.launcher.netenv import network_env
from gpu_stack_runtime.launcher.ray_cluster import ray_start_command
from gpu_stack_runtime.launcher.supervise import Supervisor, shell_exit_code
from gpu_stack_runtime.launcher.vllm_args import check_vllm_args, vllm_args, vllm_command

NOFILE_TARGET = 65536
_REDACT = (API_KEY_ENV, METRICS_KEY_ENV)


def log(line: str) -> None:
    print(f"gpu-stack-launch: {line}", file=sys.stderr, flush=True)


def child_env(environ: Mapping[str, str], keys: Mapping[str, str] | None = None
              ) -> dict[str, str]:
    """The environment for Ray (no keys: a key in ``environ`` is dropped) or, with
    ``keys``, for vLLM: network variables, offline hub, the keys given."""
    env = {k: v for k, v in environ.items() if k not in _REDACT}
    env.update(network_env(environ))
    env.update(keys or {})
    env.setdefault("HF_HUB_OFFLINE", "1")  # weights come from the volume, never a hub
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Ray >= 2.5x drains a node for up to 30 s on SIGTERM (for Ray Serve). Nothing
    # here needs draining: vLLM is stopped before Ray, so Ray can stop at once.
    env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
    bin_dir = str(Path(sys.executable).parent)  # the venv/image holding ray and vllm
    path = env.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        env["PATH"] = os.pathsep.join(p for p in (bin_dir, path) if p)
    return env


def _raise_nofile_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE_TARGET if hard == resource.RLIM_INFINITY else min(NOFILE_TARGET, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _print_plan(plan: dict, env: Mapping[str, str], environ: Mapping[str, str]) -> None:
    added = {k: ("<redacted>" if k in _REDACT else v)
             for k, v in env.items() if environ.get(k) != v and k != "PATH"}
    print(json.dumps({**plan, "env": dict(sorted(added.items()))}, indent=2))


def _stopped(sup: Supervisor) -> int:
    return EXIT_SIGNAL_BASE + int(sup.stop_signal or 0)


def _checked(args, environ: Mapping[str, str], executor: str):
    """The serving configuration, vLLM's keys and the model's marker, all checked
    before anything starts."""
    config = options.serve_config(args, environ, executor)
    keys = _keys(args, environ)
    marker = check_model_dir(config.model_dir)
    if API_KEY_ENV not in keys:
        log("warning: no API key (--api-key-file or VLLM_API_KEY): the API is open")
    return dataclasses.replace(config, require_api_key=API_KEY_ENV in keys), keys, marker


def run_head(args, environ: Mapping[str, str]) -> int:
    config, keys, marker = _checked(args, environ, "ray")
    env = child_env(environ)  # Ray's and the GPU wait's: no key
    node_ip = env["VLLM_HOST_IP"]
    # A head this launcher starts listens on the pod address (KubeRay's own
    # RAY_ADDRESS for a head, 127.0.0.1:port, names the same GCS from inside the pod);
    # --no-ray-start waits on the cluster at --ray-address.
    address = (f"{node_ip}:{args.ray_port}" if args.ray_start or not args.ray_address
               else args.ray_address)
    env["RAY_ADDRESS"] = address  # where vLLM's Ray executor connects
    ray_cmd = None
    if args.ray_start:
        ray_cmd = ray_start_command("head", environ, port=args.ray_port,
                                    num_gpus=args.num_gpus, node_ip=node_ip,
                                    extra=args.ray_arg)
    wait_cmd = [sys.executable, "-m", "gpu_stack_runtime.launcher.wait_gpus",
                "--address", address, "--gpus", str(config.gpus_needed),
                "--timeout", f"{args.gpu_timeout:g}", "--interval", f"{args.progress_interval:g}"]
    vllm_cmd = vllm_command(config)
    vllm_env = {**child_env(environ, keys), "RAY_ADDRESS": address}
    if args.dry_run:
        _print_plan({"ray_start": ray_cmd, "gpu_wait": wait_cmd, "vllm": vllm_cmd,
                     "gpus_needed": config.gpus_needed, "model_marker": marker},
                    vllm_env, environ)
        return 0
    _raise_nofile_limit()
    sup = Supervisor(log, adopt_orphans=True)
    sup.install_signal_handlers()
    try:
        if ray_cmd:
            sup.spawn("ray", ray_cmd, env)
        log(f"waiting for {config.gpus_needed} GPUs (TP {config.tensor_parallel_size} x "
            f"PP {config.pipeline_parallel_size}) at {address}, up to {args.gpu_timeout:g} s")
        sup.spawn("gpu-wait", wait_cmd, env)
        first = sup.wait_first(["gpu-wait", "ray"])
        if first is None:
            return _stopped(sup)
        if first == "ray":
            log("Ray exited before the GPUs joined")
            return EXIT_RAY
        if sup.exit_codes["gpu-wait"] != 0:
            return shell_exit_code(sup.exit_codes["gpu-wait"])
        log(f"starting vLLM: {shlex.join(vllm_cmd)}")
        sup.spawn("vllm", vllm_cmd, vllm_env)
        first = sup.wait_first(["vllm", "ray"])
        if first is None:
            return _stopped(sup)
        if first == "ray":
            log("Ray exited: stopping vLLM")
            return EXIT_RAY
        return shell_exit_code(sup.exit_codes["vllm"])
    finally:
        sup.stop_all(["vllm", "gpu-wait", "ray"], args.stop_grace)


def run_serve(args, environ: Mapping[str, str]) -> int:
    config, keys, marker = _checked(args, environ, "mp")
    vllm_cmd = vllm_command(config)
    vllm_env = child_env(environ, keys)
    if args.dry_run:
        _print_plan({"vllm": vllm_cmd, "gpus_needed": config.gpus_needed,
                     "model_marker": marker}, vllm_env, environ)
        return 0
    _raise_nofile_limit()
    sup = Supervisor(log, adopt_orphans=True)
    sup.install_signal_handlers()
    try:
        log(f"starting vLLM (multiprocessing executor, {config.gpus_needed} GPU(s) in this "
            f"pod): {shlex.join(vllm_cmd)}")
        sup.spawn("vllm", vllm_cmd, vllm_env)
        if sup.wait_first(["vllm"]) is None:
            return _stopped(sup)
        return shell_exit_code(sup.exit_codes["vllm"])
    finally:
        sup.stop_all(["vllm"], args.stop_grace)


def _keys(args, environ: Mapping[str, str]) -> dict[str, str]:
    """vLLM's keys: from the files given, else inherited from the environment."""
    keys = {API_KEY_ENV: options.read_api_key(args.api_key_file),
            METRICS_KEY_ENV: options.read_api_key(args.metrics_key_file)}
    return {name: value or environ.get(name) for name, value in keys.items()
            if value or environ.get(name)}


def run_worker(args, environ: Mapping[str, str]) -> int:
    env = child_env(environ)
    cmd = ray_start_command("worker", environ, address=args.ray_address,
                            num_gpus=args.num_gpus, node_ip=env["VLLM_HOST_IP"],
                            extra=args.ray_arg)
    if args.dry_run:
        _print_plan({"ray_start": cmd}, env, environ)
        return 0
    _raise_nofile_limit()
    sup = Supervisor(log, adopt_orphans=True)
    sup.install_signal_handlers()
    try:
        sup.spawn("ray", cmd, env)
        if sup.wait_first(["ray"]) is None:
            return _stopped(sup)
        return shell_exit_code(sup.exit_codes["ray"])
    finally:
        sup.stop_all(["ray"], args.stop_grace)


def run_check_args(args, environ: Mapping[str, str]) -> int:
    config = options.serve_config(args, environ, args.executor)
    namespace = check_vllm_args(vllm_args(config))
    print(f"vLLM accepts the production command line: "
          f"tensor_parallel_size={namespace.tensor_parallel_size} "
          f"pipeline_parallel_size={namespace.pipeline_parallel_size} "
          f"distributed_executor_backend={namespace.distributed_executor_backend}")
    return 0


def run_healthcheck(args, _environ) -> int:
    url = f"http://127.0.0.1:{args.port}/health"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"gpu-stack-launch: {url}: {exc}", file=sys.stderr)
        return 1


_COMMANDS = {"head": run_head, "serve": run_serve, "worker": run_worker,
             "check-args": run_check_args, "healthcheck": run_healthcheck}


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = dict(os.environ if environ is None else environ)
    try:
        args = options.build_parser(environ).parse_args(argv)
        return _COMMANDS[args.command](args, environ)
    except LaunchError as exc:
        log(f"error: {exc}")
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
