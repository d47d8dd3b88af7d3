#!/usr/bin/env bash
# Build (and push) the collection's container images, tagged exactly as the defaults
# reference them.
#
#   bash images/build.sh [--engine podman|buildah] [--push REGISTRY] [--dry-run] [IMAGE...]
#
# IMAGE: gpu-stack-runtime, ray-vllm-ubi9, ray-vllm-ubuntu, llm-gateway (default: all four).
# The references come from the roles' defaults, read when the script runs:
#   gpu-stack-runtime  roles/model_storage/defaults/main.yml  model_storage_image
#   ray-vllm-ubi9      roles/ray_vllm/defaults/main.yml       ray_vllm_image (and <tag>-ubi9)
#   ray-vllm-ubuntu    roles/ray_vllm/defaults/main.yml       ray_vllm_image with <tag>-ubuntu
#   llm-gateway        roles/llm_gateway/defaults/main.yml    llm_gateway_image
# Without --push the images are tagged with those references unchanged. With
# --push REGISTRY (for example registry.example.com/llmops) each reference's registry
# and path are replaced by REGISTRY, the image is pushed there, and the script prints
# the inventory variables that point the collection at it.
# --dry-run prints the commands instead of running them (tests compare its tags with
# the defaults). The build context is the repository root, filtered by
# images/containerignore to what the Containerfiles copy.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENGINE=podman
REGISTRY=""
DRY_RUN=0
IMAGES=()

usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while (($#)); do
    case "$1" in
        --engine) ENGINE=${2:?--engine needs podman or buildah}; shift 2 ;;
        --push) REGISTRY=${2:?--push needs a registry, e.g. registry.example.com/llmops}
                REGISTRY=${REGISTRY%/}; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
        *) IMAGES+=("$1"); shift ;;
    esac
done
case "$ENGINE" in
    podman) BUILD=(podman build) ;;
    buildah) BUILD=(buildah bud) ;;
    *) echo "--engine must be podman or buildah (got $ENGINE)" >&2; exit 2 ;;
esac
((${#IMAGES[@]})) || IMAGES=(gpu-stack-runtime ray-vllm-ubi9 ray-vllm-ubuntu llm-gateway)

# The value of a top-level `key: value` line of a role's defaults.
default_of() {
    local file="$ROOT/roles/$1/defaults/main.yml" value
    value=$(sed -n "s/^$2:[[:space:]]*//p" "$file" | tr -d "\"'")
    [[ -n "$value" ]] || { echo "$2 not found in $file" >&2; exit 1; }
    printf '%s\n' "$value"
}

# A reference with its registry/path replaced by REGISTRY (when pushing).
relocate() {
    if [[ -n "$REGISTRY" ]]; then printf '%s/%s\n' "$REGISTRY" "${1##*/}"; else printf '%s\n' "$1"; fi
}

run() {
    if ((DRY_RUN)); then printf '%s\n' "$*"; else (cd "$ROOT" && "$@"); fi
}

RUNTIME_REF=$(relocate "$(default_of model_storage model_storage_image)")
RAY_VLLM_REF=$(relocate "$(default_of ray_vllm ray_vllm_image)")
GATEWAY_REF=$(relocate "$(default_of llm_gateway llm_gateway_image)")
FORMAT=(--format docker)  # the Docker format keeps HEALTHCHECK

for image in "${IMAGES[@]}"; do
    case "$image" in
        gpu-stack-runtime)
            file=images/gpu-stack-runtime/Containerfile
            # the build checks the package's version against the tag
            tags=("$RUNTIME_REF"); args=(--build-arg "RUNTIME_VERSION=${RUNTIME_REF##*:}") ;;
        ray-vllm-ubi9)
            file=images/ray-vllm/Containerfile.ubi9
            tags=("$RAY_VLLM_REF" "$RAY_VLLM_REF-ubi9"); args=() ;;
        ray-vllm-ubuntu)
            file=images/ray-vllm/Containerfile.ubuntu
            tags=("$RAY_VLLM_REF-ubuntu"); args=() ;;
        llm-gateway)
            file=images/gateway/Containerfile
            tags=("$GATEWAY_REF"); args=() ;;
        *) echo "unknown image $image (gpu-stack-runtime, ray-vllm-ubi9, ray-vllm-ubuntu, llm-gateway)" >&2
           exit 2 ;;
    esac
    tag_args=()
    for tag in "${tags[@]}"; do tag_args+=(-t "$tag"); done
    run "${BUILD[@]}" "${FORMAT[@]}" --ignorefile images/containerignore -f "$file" "${args[@]}" "${tag_args[@]}" .
    if [[ -n "$REGISTRY" ]]; then
        for tag in "${tags[@]}"; do run "$ENGINE" push "$tag"; done
    fi
done

if [[ -n "$REGISTRY" ]]; then
    echo "# point the collection at the pushed images (inventory group_vars):"
    echo "model_storage_image: $RUNTIME_REF"
    echo "ray_vllm_image: $RAY_VLLM_REF"
    echo "llm_gateway_image: $GATEWAY_REF"
fi
