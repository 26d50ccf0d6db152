#!/usr/bin/env bash
# Per-record overhead of Powertools for AWS Lambda (Python) batch processing, the peer of
# `cargo bench -p queue-worker --bench batch_overhead`. Creates the pinned venv if needed, then
# runs peer.py with this script's arguments:
#
#   infra/bench/powertools/run.sh [--seconds 2] [--warmup 0.5] [--batch 10 100] [--json PATH]
#
# Settings (environment): PEER_VENV (default .venv/powertools; not POWERTOOLS_*, a prefix
# Powertools reads itself), PYTHON (default python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
# shellcheck source=../../lib/common.sh
source "$root/infra/lib/common.sh"
venv="${PEER_VENV:-$root/.venv/powertools}"
ensure_venv "$venv" "$here/requirements.txt" "${PYTHON:-python3}" python "powertools bench"
exec "$venv/bin/python" "$here/peer.py" "$@"
