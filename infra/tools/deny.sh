#!/usr/bin/env bash
# Checks the dependency graph against deny.toml: licenses, banned crates, sources. Installs the
# pinned cargo-deny into .venv/cargo-deny on first use (a few minutes of compiling).
# Advisories need a database these machines cannot fetch: see deny.toml.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
version=0.20.2
bin="$root/.venv/cargo-deny/bin/cargo-deny"
if ! "$bin" --version 2>/dev/null | grep -qx "cargo-deny $version"; then
    echo "installing cargo-deny $version into .venv/cargo-deny"
    cargo install cargo-deny --version "$version" --locked --quiet \
        --root "$root/.venv/cargo-deny" --target-dir "$root/target/cargo-deny"
fi
cd "$root"
exec "$bin" check --hide-inclusion-graph licenses bans sources
