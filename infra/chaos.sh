#!/usr/bin/env bash
# `make chaos`: the chaos soak of every domain driver (tests/domains/NAME, binary NAME-driver; see
# domain_drivers in infra/lib/common.sh) at maximum concurrency 2, 5 and 10, each with the fixed
# and the adaptive concurrency limit on the same burst (what each soak does and checks: its
# domain's CHAOS.md). Starts the emulator unless it is running (then stops it again). Exits
# non-zero when a correctness check fails in any run. Prints a table per domain: the columns of
# each report's "summary" object.
#   infra/chaos.sh [OUT_DIR]    REQUESTS=N (default 10000), DOMAINS="name ..." (default all),
#                               CONCURRENCY="2 5 10",
#                               LIMITS="fixed adaptive", CHAOS_TIMEOUT=S, PANIC_RATE=P (default 0),
#                               PROFILE=release (default dev), EMULATOR_PORT=...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=infra/lib/common.sh
source infra/lib/common.sh
out="${1:-target/chaos}"
mkdir -p "$out"
require_domains
mapfile -t drivers < <(domain_drivers)
if ((${#drivers[@]} == 0)); then
    echo "no domain driver under tests/domains/: nothing to soak"
    exit 0
fi

emulator=infra/emulator/emulator.sh
if ! "$emulator" status >/dev/null 2>&1; then
    trap '"$emulator" down' EXIT
    "$emulator" up
fi
eval "$("$emulator" env)"
profile="${PROFILE:-dev}"
status=0
reports=()
for driver in "${drivers[@]}"; do
    read -r package binary <<<"$driver"
    cargo build --quiet --profile "$profile" -p "$package" --bin "$binary"
    runner="${CARGO_TARGET_DIR:-target}/$([[ $profile == dev ]] && echo debug || echo "$profile")/$binary"
    for concurrency in ${CONCURRENCY:-2 5 10}; do
        for limit in ${LIMITS:-fixed adaptive}; do
            report="$out/report-$package-$concurrency-$limit.json"
            rm -f "$report"
            echo "== $package: chaos soak at maximum concurrency $concurrency, $limit concurrency limit (load: $(cut -d' ' -f1-3 /proc/loadavg))"
            "$runner" --maximum-concurrency "$concurrency" chaos \
                --requests "${REQUESTS:-10000}" --timeout "${CHAOS_TIMEOUT:-3600}" \
                --concurrency-limit "$limit" --panic-rate "${PANIC_RATE:-0}" \
                --report "$report" || status=1
            [[ -f "$report" ]] && reports+=("$report")
        done
    done
done
python3 - "$out/report.json" "${reports[@]}" <<'PY'
import json, os, sys
files = sys.argv[2:]
runs = [json.load(open(f)) for f in files]
json.dump(runs, open(sys.argv[1], "w"), indent=2)
# A report's "summary" object holds the columns its domain wants in this table, in the order of
# its "summary_columns" list (JSON objects have none); a report without one shows its verdict.
def print_table(headers, rows):
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    print(" | ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))

# Files are named report-PACKAGE-CONCURRENCY-LIMIT.json: one table per package.
by_package = {}
for path, run in zip(files, runs):
    package = os.path.basename(path)[len("report-"):].rsplit("-", 2)[0]
    by_package.setdefault(package, []).append(run)
for package, group in by_package.items():
    print(f"== {package}")
    summaries = [run.get("summary") or {"pass": run.get("check_passed", "?")} for run in group]
    orders = [run.get("summary_columns") or list(summary) for run, summary in zip(group, summaries)]
    headers = []
    for order in sorted(orders, key=len, reverse=True):
        headers += [key for key in order if key not in headers]
    print_table(headers, [[str(summary.get(h, "")) for h in headers] for summary in summaries])
print(f"written: {sys.argv[1]}")
PY
exit "$status"
