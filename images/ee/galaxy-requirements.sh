#!/usr/bin/env bash
# Write collections/requirements.yml without its `.` entry (type dir: the checkout itself,
# which a project sync installs) to OUT: the execution environment installs the
# collection from its tarball instead, and ansible-builder's galaxy step would take `.`
# for its own build directory.
#
#   bash images/ee/galaxy-requirements.sh IN OUT
set -euo pipefail
in=${1:?IN}
out=${2:?OUT}
awk '/^  - name: \.$/ { getline; if ($0 !~ /^    type: dir$/) exit 3; next } { print }' \
    "$in" >"$out"
if grep -q "type: dir" "$out"; then
    echo "$in: a type dir entry other than '  - name: .' / '    type: dir' is left" >&2
    exit 1
fi
