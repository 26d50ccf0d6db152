#!/usr/bin/env bash
# Runs a pinned deployment tool (sam, cfn-lint, cargo-lambda) from the project's tools venv,
# creating the venv first if needed:  infra/tools/tools.sh sam validate --lint
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=../lib/common.sh
source "$root/infra/lib/common.sh"
venv="${TOOLS_VENV:-$root/.venv/tools}"
ensure_venv "$venv" "$root/infra/tools/requirements.txt" "${PYTHON:-python3}" sam tools

# sam build finds cargo-lambda (and zig, for cross-compiling) on PATH.
export PATH="$venv/bin:$PATH"
export SAM_CLI_TELEMETRY=0
exec "$@"
