#!/usr/bin/env bash
# Regenerates the lock files of the project's Python venvs from their hand-edited pins:
#
#   infra/tools/lock-python.sh                  all three
#   infra/tools/lock-python.sh emulator tools   only these (emulator, tools, localstack)
#
# infra/<name>/requirements.txt holds the top-level pins (edit it); requirements.lock next to it
# is generated: every package, dependencies included, pinned by version and by the sha256 of each
# of its distribution files on the index, so ensure_venv (infra/lib/common.sh) can install it
# with `pip install --require-hashes`. Each lock is compiled by pip-compile (pip-tools, installed
# in a scratch venv under a temporary directory) running on the Python version its venv uses,
# since environment markers differ between versions: 3.11 for emulator and tools, 3.13 for
# localstack. The lock records the sha256 of the requirements.txt it was compiled from, and
# ensure_venv refuses a lock that no longer matches it.
# Settings (environment): PYTHON_311, PYTHON_313 (interpreters to use; default pythonX.Y on
# PATH, else a pyenv version).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
pip_tools=pip-tools==7.7.0

log() { printf 'lock-python: %s\n' "$*" >&2; }

# find_python X.Y: an interpreter of exactly that version.
find_python() {
    local want="$1" var="PYTHON_${1/./}" candidate
    local candidates=("${!var:-}" "python$want")
    if command -v pyenv >/dev/null 2>&1; then
        candidates+=("$(pyenv root)"/versions/"$want".*/bin/python3)
    fi
    for candidate in "${candidates[@]}"; do
        [[ -n "$candidate" ]] || continue
        if [[ "$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" == "$want" ]]; then
            echo "$candidate"
            return
        fi
    done
    log "no Python $want found (tried $var, python$want and pyenv versions); set $var to one"
    return 1
}

python_for() {
    case "$1" in
        emulator | tools) echo 3.11 ;;
        localstack) echo 3.13 ;;
        *)
            log "unknown venv '$1' (emulator, tools, localstack)"
            return 1
            ;;
    esac
}

names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=(emulator tools localstack)
for name in "${names[@]}"; do python_for "$name" >/dev/null; done

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

cd "$root"
for name in "${names[@]}"; do
    version="$(python_for "$name")"
    tool="$scratch/pip-tools-$version"
    if [[ ! -x "$tool/bin/pip-compile" ]]; then
        "$(find_python "$version")" -m venv "$tool"
        "$tool/bin/pip" install --quiet --disable-pip-version-check "$pip_tools"
    fi
    requirements="infra/$name/requirements.txt"
    lock="infra/$name/requirements.lock"
    log "$lock (Python $version)"
    # pip-compile reuses the previous lock's hashes of unchanged pins and rewrites the file.
    [[ -f "$lock" ]] && cp "$lock" "$scratch/$name.lock"
    # Hashes come from the index only: a find-links directory of local builds stays out.
    env -u PIP_FIND_LINKS CUSTOM_COMPILE_COMMAND=infra/tools/lock-python.sh \
        "$tool/bin/pip-compile" --quiet --generate-hashes --strip-extras --allow-unsafe \
        --no-emit-index-url --no-emit-trusted-host --no-emit-find-links \
        -o "$scratch/$name.lock" "$requirements"
    {
        printf '# Generated from %s (sha256 %s): do not edit; edit that file, then run\n' \
            "$requirements" "$(sha256sum "$requirements" | cut -d' ' -f1)"
        printf '# infra/tools/lock-python.sh %s\n' "$name"
        cat "$scratch/$name.lock"
    } >"$lock"
    log "$lock: $(grep -c '^[A-Za-z0-9]' "$lock") packages"
done
