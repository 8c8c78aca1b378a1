#!/usr/bin/env bash
# Builds the Python ServiceNow agent into a component (`make py-guest` runs this):
#   1. a venv with the pinned componentize-py (target/py-guest-venv, reused while
#      requirements.txt is unchanged);
#   2. the agent's unit tests, natively, against the generated bindings (target/py-guest-bindings);
#   3. componentize-py against wit/ (world `agent`) → target/wasm-guests/py/servicenow_agent_py.wasm.
# Prints the size and the time of each step. Everything it writes is under target/ (not in git).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
venv=${PY_GUEST_VENV:-target/py-guest-venv}
out=${PY_GUEST_OUT:-target/wasm-guests/py/servicenow_agent_py.wasm}
bindings=target/py-guest-bindings
python=${PYTHON:-python3}
now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

t=$(now)
if ! cmp -s "$here/requirements.txt" "$venv/.requirements.txt" 2>/dev/null; then
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$venv/.requirements.txt"
    echo "py-guest: installed $("$venv/bin/componentize-py" --version) in $(took "$t")"
fi

t=$(now)
rm -rf "$bindings"
"$venv/bin/componentize-py" -q -d wit -w agent bindings "$bindings"
PYTHONPATH="$here/src:$bindings" "$venv/bin/python" -m unittest discover -q -s "$here/tests" -t "$here"
echo "py-guest: unit tests passed in $(took "$t")"

t=$(now)
mkdir -p "$(dirname "$out")"
"$venv/bin/componentize-py" -q -d wit -w agent componentize -p "$here/src" app -o "$out.tmp"
if ! cmp -s "$out.tmp" "$out" 2>/dev/null; then
    # Code compiled by the e2e tests for the previous build (engine.cache_dir) is stale now.
    rm -rf "$(dirname "$out")/compiled"
fi
mv "$out.tmp" "$out"
echo "py-guest: built $out ($(stat -c %s "$out") bytes) in $(took "$t")"
