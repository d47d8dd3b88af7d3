#!/usr/bin/env bash
# ansible-test sanity, offline, with a guard against the silent "every target skipped".
#
# usage: tests/sanity/run.sh VENV PYTHON_VERSION
#
# ansible-test refuses a symlinked collection, and a copy under a git-ignored path of
# this work tree makes it skip every target and exit 0. So the files git knows about
# (tracked or not ignored) are copied to a fresh directory outside the repository,
# together with the dependency collections the import test needs.
set -euo pipefail

venv=$(cd "$1" && pwd)
pyver=$2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-stack-sanity.XXXXXX")
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/llmops/gpu_stack"
mkdir -p "$dest"
(cd "$root" && git ls-files -co --exclude-standard -z | tar --null -T - -cf - ) | tar -xf - -C "$dest"

# Dependency collections, from the `ansible` package in the venv, beside ours.
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
deps=(kubernetes/core)
for dep in "${deps[@]}"; do
    mkdir -p "$work/ansible_collections/${dep%/*}"
    cp -r "$site/ansible_collections/$dep" "$work/ansible_collections/$dep"
done

cd "$dest"
export PATH="$venv/bin:$PATH"
rc=0
ansible-test sanity --venv --python "$pyver" --junit --color no >"$work/sanity.log" 2>&1 || rc=$?
# ansible-test's own lines; pip's download chatter from the per-test venvs is dropped.
grep -vE '^ *(Collecting|Downloading|Installing|Successfully|Looking in|Requirement already|Processing|Attempting|Found existing|Uninstalling)|is ignored|━' \
    "$work/sanity.log" || true
[ "$rc" -eq 0 ] || { echo "ansible-test sanity failed (rc=$rc)"; exit "$rc"; }

# The guard: every sanity test must have run on real targets, except those for file
# kinds this collection does not have.
"$venv/bin/python" - tests/output/junit <<'PY'
import pathlib, sys, xml.etree.ElementTree as ET

NOTHING_TO_CHECK = {
    "pslint": "no PowerShell files",
    "action-plugin-docs": "no action plugins",
}
ran, skipped = [], []
for report in sorted(pathlib.Path(sys.argv[1]).glob("ansible-test-sanity-*.xml")):
    for case in ET.parse(report).iter("testcase"):
        name = case.get("name")
        (skipped if case.find("skipped") is not None else ran).append(name)
unexpected = [n for n in skipped if n.rsplit("-python-", 1)[0] not in NOTHING_TO_CHECK]
print(f"sanity guard: {len(ran)} tests ran, {len(skipped)} skipped ({', '.join(skipped) or 'none'})")
if unexpected or len(ran) < 20:
    sys.exit(f"sanity guard: tests skipped that must run: {unexpected or 'too few tests ran'}")
PY
