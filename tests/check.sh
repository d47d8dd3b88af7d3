#!/usr/bin/env bash
# The test command (README, .ci/run): every quality gate, in the ecosystem's order.
#   1. ansible-test sanity (Python 3.11 toolchain, and 3.12 when bootstrap made one)
#   2. ansible-lint, production profile, offline
#   3. molecule scenarios: one per role against the lab (extensions/molecule/); they
#      start first and run beside 1, 2 and the unit tests (they mostly wait on the lab),
#      their log is printed once they end
#   4. pytest: unit tests on Python 3.12 (when present), the model stager's venv, then
#      the suite on 3.11 in two parts: the unit tests and the integration directories
#      that serve no model (vSphere, the lab itself, gitops, images, monitoring) while
#      molecule still runs, the rest once it has ended (each part prints its slowest
#      tests); last, so the log ends with pytest's summary line.
# Run tests/bootstrap.sh first. Extra arguments go to the final pytest run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
export PATH="$ROOT/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$ROOT/collections"
export ANSIBLE_NOCOLOR=1 PY_COLORS=0 NO_COLOR=1

# each step's header says how long the run has taken so far (the CI log's only clock)
step() { printf '\n=== %s (at %ds)\n' "$*" "$SECONDS"; }

# A built copy of this collection in the user's collections (molecule's prerun installs
# one unless a scenario says `prerun: false`) would shadow the working tree: remove it.
stale="$HOME/.ansible/collections/ansible_collections/llmops/gpu_stack"
if [ -f "$stale/MANIFEST.json" ] && [ ! -L "$stale" ]; then
    echo "removing a stale installed copy of llmops.gpu_stack from ~/.ansible/collections"
    rm -rf "$stale"
fi

step "ruff"
ruff check .

# Molecule: a scenario per role, in the pipeline's order, on one lab. shared_state
# (extensions/molecule/config.yml): the default scenario's create starts the lab once and
# its destroy stops it after the last scenario.
# Its working directory (state.yml: created, prepared; the recorded lab state) is a fresh
# one per run: molecule's default is named after the checkout's directory name alone, so
# an earlier run that was stopped (or another checkout of the same name) would leave
# "already prepared" and a stale recording behind for this one.
molecule_log=$(mktemp)
MOLECULE_EPHEMERAL_DIRECTORY=$(mktemp -d)
export MOLECULE_EPHEMERAL_DIRECTORY
molecule test --shared-state \
    -s serving_plan -s esxi_gpu_passthrough -s ocp_gpu_nodes -s gpu_operators \
    -s model_storage -s ray_vllm -s llm_gateway -s monitoring -s validate -s gitops_export >"$molecule_log" 2>&1 &
molecule_pid=$!
echo "molecule scenarios started in the background (log printed when they end)"
# A gate failing before the wait below ends the run: stop molecule and its lab too.
stop_molecule() {
    if kill -0 "$molecule_pid" 2>/dev/null; then
        kill "$molecule_pid" 2>/dev/null || true
        wait "$molecule_pid" 2>/dev/null || true
        GPU_LAB_HOME="$ROOT/.lab/molecule" gpu-lab reset >/dev/null 2>&1 || true
        tail -n 40 "$molecule_log"
    fi
    rm -rf "$MOLECULE_EPHEMERAL_DIRECTORY"
}
trap stop_molecule EXIT

step "ansible-test sanity (Python 3.11, ansible-core $(.venv/bin/python -c 'import ansible; print(ansible.__version__)'))"
bash tests/sanity/run.sh .venv 3.11
if [ -x .venv-py312/bin/python ]; then
    step "ansible-test sanity (Python 3.12, ansible-core $(.venv-py312/bin/python -c 'import ansible; print(ansible.__version__)'))"
    bash tests/sanity/run.sh .venv-py312 3.12
fi

step "ansible-lint (production profile, offline)"
ansible-lint

if [ -x .venv-py312/bin/python ]; then
    step "pytest unit tests (Python 3.12)"
    .venv-py312/bin/python -m pytest -q -p no:cacheprovider tests/unit
fi

step "pytest: model stager (its own venv, .venv-stager)"
.venv-stager/bin/python -m pytest -q -p no:cacheprovider tests/unit/runtime tests/integration/stager

# The first part of the 3.11 suite runs while molecule does: these directories start
# their own labs (vcsim, the API server, Ray with ports of its own) and serve no model,
# so they share the machine with molecule's lab without touching it. The second part
# is the rest of tests/integration (pyproject's testpaths are these two directories).
PART1_INTEGRATION=(tests/integration/vsphere tests/integration/lab tests/integration/gitops
                   tests/integration/images tests/integration/monitoring)
PART1=(tests/unit "${PART1_INTEGRATION[@]}")
step "pytest (Python 3.11), part 1 of 2, beside molecule: ${PART1[*]}"
part1_rc=0
.venv/bin/python -m pytest -p no:cacheprovider --durations=10 "${PART1[@]}" "$@" || part1_rc=$?
# 5: no test of part 1 selected by the caller's arguments
if [ "$part1_rc" -ne 0 ] && [ "$part1_rc" -ne 5 ]; then
    echo "pytest part 1 failed (exit code $part1_rc)"
    exit "$part1_rc"
fi

step "molecule: a scenario per role against the lab"
molecule_rc=0
wait "$molecule_pid" || molecule_rc=$?
cat "$molecule_log"
echo "molecule ended at ${SECONDS}s"
rm -f "$molecule_log"
rm -rf "$MOLECULE_EPHEMERAL_DIRECTORY"
trap - EXIT
if [ "$molecule_rc" -ne 0 ]; then
    echo "molecule failed (exit code $molecule_rc)"
    exit "$molecule_rc"
fi

step "pytest (Python 3.11), part 2 of 2: the rest"
ignore=()
for path in "${PART1_INTEGRATION[@]}"; do ignore+=("--ignore=$path"); done
exec .venv/bin/python -m pytest --durations=25 tests/integration "${ignore[@]}" "$@"
