#!/usr/bin/env bash
# Removes example NAME from this checkout, for a fork that does not want it:
#   infra/remove-example.sh import
#   1. template.yaml: deletes every block from a `# example: NAME` line through the next
#      `# end example: NAME` line (markers are whole lines, indentation allowed). Refuses, and
#      changes nothing, when any example's markers are unbalanced, nested in each other or
#      misspelled (a line like `#example: x` or `# end example:x`).
#   2. deletes the example's directories, by convention: functions/NAME, functions/NAME-*,
#      shared/NAME, shared/NAMEs and tests/domains/NAME, whichever exist (each printed).
#   3. refreshes Cargo.lock (`cargo metadata`), which also checks the workspace still loads.
#   4. deletes each `[profile.*.package.PKG]` section of Cargo.toml whose PKG is no longer in
#      Cargo.lock (a tuning for a dependency only the example had; cargo warns about it).
# Then `make check` and `infra/tools/tools.sh sam validate --lint` check what is left. A path
# the example's code is named by outside these (docs, scripts) is left for the fork to edit:
# `git grep -i NAME` finds them.
set -euo pipefail

usage() {
    printf 'usage: %s NAME   (removes example NAME: its template blocks and its crates)\n' "$0" >&2
    exit 2
}
[[ $# -eq 1 ]] || usage
name="$1"
[[ "$name" =~ ^[a-z0-9][a-z0-9_-]*$ ]] || {
    printf 'remove-example: %q is not an example name (lowercase letters, digits, - and _)\n' "$name" >&2
    exit 2
}

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
template=template.yaml

# Checks every example's markers, then prints the template without NAME's blocks. Exits 1
# (printing where) on a misspelled marker, a start inside an open block, an end without its
# start, or a block still open at the end of the file; 3 when NAME has no block.
strip_template() {
    awk -v name="$name" '
        function fail(message) {
            printf "remove-example: %s:%d: %s\n", FILENAME, FNR, message > "/dev/stderr"
            failed = 1
            exit 1
        }
        {
            line = $0
            sub(/^[ \t]+/, "", line)
            kind = ""
            marker = ""
            if (line ~ /^# example: [a-z0-9][a-z0-9_-]*$/) {
                kind = "start"; marker = substr(line, length("# example: ") + 1)
            } else if (line ~ /^# end example: [a-z0-9][a-z0-9_-]*$/) {
                kind = "end"; marker = substr(line, length("# end example: ") + 1)
            } else if (line ~ /^#[ \t]*(end[ \t]*)?example[ \t]*:/) {
                fail("a misspelled example marker: \"" line "\" (exactly \"# example: NAME\" or \"# end example: NAME\")")
            }
            if (kind == "start" && marker != "") {
                if (open != "") fail("\"# example: " marker "\" inside the open block of example " open " (line " opened ")")
                open = marker; opened = FNR
                if (marker == name) { found++; skipping = 1 }
                next
            }
            if (kind == "end" && marker != "") {
                if (open != marker) fail("\"# end example: " marker "\" without its \"# example: " marker "\"" (open != "" ? " (example " open " is open since line " opened ")" : ""))
                open = ""
                if (marker == name) { skipping = 0 }
                next
            }
            if (!skipping) print
        }
        END {
            if (failed) exit 1
            if (open != "") {
                printf "remove-example: %s: example %s, opened on line %d, is never closed\n", FILENAME, open, opened > "/dev/stderr"
                exit 1
            }
            if (!found) exit 3
        }
    ' "$template"
}

stripped="$(mktemp "$root/.template.XXXXXX")"
trap 'rm -f "$stripped"' EXIT
status=0
strip_template >"$stripped" || status=$?
case "$status" in
    0)
        mv "$stripped" "$template"
        printf 'removed the blocks of example %s from %s\n' "$name" "$template"
        ;;
    3) printf 'no block of example %s in %s\n' "$name" "$template" ;;
    *) exit "$status" ;;
esac

removed=0
shopt -s nullglob
for dir in "functions/$name" functions/"$name"-* "shared/$name" "shared/${name}s" "tests/domains/$name"; do
    if [[ -d "$dir" ]]; then
        printf 'deleting %s/\n' "$dir"
        rm -rf -- "$dir"
        removed=$((removed + 1))
    fi
done
shopt -u nullglob
if [[ $status -eq 3 && $removed -eq 0 ]]; then
    printf 'remove-example: example %s is not in this checkout (no template block, no crate)\n' "$name" >&2
    exit 1
fi

printf 'refreshing Cargo.lock\n'
if ! cargo metadata --format-version 1 >/dev/null; then
    printf 'remove-example: the workspace left does not load (above): a crate outside the example still uses it (git grep -il %q -- "*Cargo.toml")\n' "$name" >&2
    exit 1
fi
# Sections `[profile.<profile>.package.<pkg>]` run until the next section header or blank line.
mapfile -t stale < <(
    comm -23 \
        <(sed -nE 's/^\[profile\.[^.]+\.package\.("?)([^]"*]+)\1\]$/\2/p' Cargo.toml | sort -u) \
        <(sed -nE 's/^name = "(.*)"$/\1/p' Cargo.lock | sort -u)
)
for package in "${stale[@]}"; do
    printf 'deleting the profile tuning of %s from Cargo.toml (no longer a dependency)\n' "$package"
    awk -v package="$package" '
        /^\[/ { skipping = ($0 ~ "^\\[profile\\.[^.]+\\.package\\.\"?" package "\"?\\]$") }
        skipping && /^$/ { skipping = 0; next }
        !skipping
    ' Cargo.toml >Cargo.toml.new
    mv Cargo.toml.new Cargo.toml
done
printf 'done. What else names it: git grep -il %q\n' "$name"
