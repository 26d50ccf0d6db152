#!/usr/bin/env bash
# Runs a pinned deployment tool (sam, cfn-lint, cargo-lambda) from the project's tools venv,
# creating the venv first if needed:  infra/tools/tools.sh sam validate --lint
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${TOOLS_VENV:-$root/.venv/tools}"
requirements="$root/infra/tools/requirements.txt"
python="${PYTHON:-python3}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"

if [[ ! -x "$venv/bin/sam" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    echo "tools: installing the pinned SAM CLI, cfn-lint and cargo-lambda into $venv (~1 min, first run only)" >&2
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    echo "$want" >"$stamp"
fi

# sam build finds cargo-lambda (and zig, for cross-compiling) on PATH.
export PATH="$venv/bin:$PATH"
export SAM_CLI_TELEMETRY=0
exec "$@"
