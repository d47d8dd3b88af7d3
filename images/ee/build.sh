#!/usr/bin/env bash
# Build the execution environment (images/ee/execution-environment.yml).
#
#   bash images/ee/build.sh [--tag TAG] [--create-only] [--context DIR] [-- BUILDER_ARGS...]
#
# Builds this collection's tarball into images/ee/collection/ (git-ignored; the EE
# definition copies it from there), then runs `ansible-builder build` (or, with
# --create-only, `ansible-builder create`: the build context only, no container engine).
# BUILDER_ARGS go to ansible-builder unchanged, e.g. -- --container-runtime docker or
# -- --build-arg EE_BASE_IMAGE=<mirror>/ubi9/ubi-minimal:9.6.
# Needs ansible-galaxy and ansible-builder on PATH.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
EE_DIR="$ROOT/images/ee"
TAG="llmops-gpu-stack-ee:$(sed -n 's/^version:[[:space:]]*//p' "$ROOT/galaxy.yml")"
CONTEXT="$EE_DIR/context"
ACTION=build
EXTRA=()

while (($#)); do
    case "$1" in
        --tag) TAG=${2:?--tag needs a value}; shift 2 ;;
        --context) CONTEXT=${2:?--context needs a directory}; shift 2 ;;
        --create-only) ACTION=create; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

# the default context is inside the repository: drop the last one so that the tarball
# does not ship it (a --context elsewhere is left alone; ansible-builder rewrites it)
rm -rf "$EE_DIR/collection" "$EE_DIR/context"
ansible-galaxy collection build "$ROOT" --output-path "$EE_DIR/collection"
bash "$EE_DIR/galaxy-requirements.sh" "$ROOT/collections/requirements.yml" \
    "$EE_DIR/collection/requirements.yml"
args=(--file "$EE_DIR/execution-environment.yml" --context "$CONTEXT")
[[ $ACTION == build ]] && args+=(--tag "$TAG")
ansible-builder "$ACTION" "${args[@]}" "${EXTRA[@]}"
