#!/usr/bin/env bash
# On the GPU machine, in the checkout's root: unpack the carried packages once, then
# serve and measure one set of runs (tests/gpu/bench.py). See tests/gpu/README.md.
#   bash tests/gpu/device.sh stash   # a call that only carries a part: show what is there
#   bash tests/gpu/device.sh A       # unpack (first time) and run set A, then B likewise
#   bash tests/gpu/device.sh gateway # the gateway benchmark (tests/gpu/gateway.py)
set -u
G=.cache/gpu
if [ "${1:-}" = stash ]; then ls -la "$G"; exit 0; fi
if [ ! -f "$G/site/.ready" ]; then
  parts=$(find "$G" -maxdepth 1 -name 'part-*' | wc -l)
  echo "joining $parts parts"
  cat "$G"/part-* > /tmp/gpu-site.tar.xz || exit 1
  if [ -f "$G/site.sha256" ]; then
    echo "$(cat "$G/site.sha256")  /tmp/gpu-site.tar.xz" | sha256sum -c - || exit 1
  fi
  rm -rf "$G/site" && xz -dc -T0 /tmp/gpu-site.tar.xz | tar -C "$G" -x || exit 1
  rm -f /tmp/gpu-site.tar.xz
  touch "$G/site/.ready"
fi
mkdir -p "$G/site/bin"
cat > "$G/site/bin/ray" <<'EOF'
#!/bin/sh
exec python3 -c 'import sys; from ray.scripts.scripts import main; sys.argv[0] = "ray"; sys.exit(main())' "$@"
EOF
chmod +x "$G/site/bin/ray"
export PYTHONPATH="$PWD/$G/site:$PWD/images/runtime"
export PATH="$PWD/$G/site/bin:$PATH"
# flashinfer is not carried: its sampler would be imported after the weights load
export VLLM_USE_FLASHINFER_SAMPLER=0 POD_IP=127.0.0.1 PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 RAY_USAGE_STATS_ENABLED=0
if [ "${1:-}" = gateway ]; then
  # the gateway's LiteLLM site (prepare.py gateway), unpacked beside vLLM's; the
  # benchmark's clients import the collection through collections/ as the lab's do
  if [ ! -f "$G/gwsite/.ready" ]; then
    rm -rf "$G/gwsite" && xz -dc -T0 "$G/gw/gwsite.tar.xz" | tar -C "$G" -x || exit 1
    touch "$G/gwsite/.ready"
  fi
  mkdir -p collections/ansible_collections/llmops
  [ -e collections/ansible_collections/llmops/gpu_stack ] \
    || ln -s ../../.. collections/ansible_collections/llmops/gpu_stack
  shift
  exec python3 tests/gpu/gateway.py --gw-site "$PWD/$G/gwsite" "$@"
fi
exec python3 tests/gpu/bench.py --set "$1" --out "${OUT:-/tmp/gpu-check-out}" \
  --budget-s "${GPU_CHECK_BUDGET_S:-560}"
