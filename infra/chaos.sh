#!/usr/bin/env bash
# `make chaos`: the chaos soak of the local pipeline at maximum concurrency 2, 5 and 10 (see
# infra/local-runner/src/chaos.rs). Starts the emulator unless it is running (then stops it
# again). Exits non-zero when a correctness check fails at any concurrency.
#   infra/chaos.sh [OUT_DIR]    IMPORTS=N (default 1000), CONCURRENCY="2 5 10", CHAOS_TIMEOUT=S
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-target/chaos}"
mkdir -p "$out"

emulator=infra/emulator/emulator.sh
if ! "$emulator" status >/dev/null 2>&1; then
    trap '"$emulator" down' EXIT
    "$emulator" up
fi
eval "$("$emulator" env)"
status=0
reports=()
for concurrency in ${CONCURRENCY:-2 5 10}; do
    echo "== chaos soak at maximum concurrency $concurrency"
    cargo run --quiet -p local-runner -- --maximum-concurrency "$concurrency" chaos \
        --imports "${IMPORTS:-1000}" --timeout "${CHAOS_TIMEOUT:-1800}" \
        --report "$out/report-$concurrency.json" || status=1
    [[ -f "$out/report-$concurrency.json" ]] && reports+=("$out/report-$concurrency.json")
done
python3 - "$out/report.json" "${reports[@]}" <<'PY'
import json, sys
runs = [json.load(open(f)) for f in sys.argv[2:]]
json.dump(runs, open(sys.argv[1], "w"), indent=2)
cols = [
    ("conc", lambda r: r["maximum_concurrency"]),
    ("accepted", lambda r: r["accepted"]),
    ("done+poison", lambda r: f'{r["completed"]}+{r["failed_poison"]}'),
    ("lost", lambda r: r["lost"] + r["failed_not_poison"]),
    ("unfinished", lambda r: r.get("unfinished_at_timeout", 0)),
    ("twice", lambda r: r["completed_twice"]),
    ("rows ok", lambda r: r["rows_of_completed_imports_checked"] == r["rows_expected"] and r["stray_rows"] == 0),
    ("peak/C", lambda r: f'{r["downstream"]["peak_concurrency"]}/{r["downstream"]["capacity"]}'),
    ("goodput", lambda r: "n/a" if r["downstream"]["goodput_fraction"] is None else f'{r["downstream"]["goodput_fraction"]:.0%}'),
    ("drain s", lambda r: f'{r["drain_seconds"]:.0f}'),
    ("retries", lambda r: r["retries"]),
    ("parked", lambda r: sum(r["parked_by_class"].values())),
    ("circuit", lambda r: r["circuit_openings"]),
    ("kills", lambda r: sum(r["kills"].values())),
    ("dups", lambda r: r["duplicate_deliveries"]),
    ("faults", lambda r: sum(r["faults"].values())),
    ("pass", lambda r: r["check_passed"]),
]
rows = [[str(f(r)) for _, f in cols] for r in runs]
widths = [max(len(h), *(len(row[i]) for row in rows)) for i, (h, _) in enumerate(cols)] if rows else []
print(" | ".join(h.ljust(w) for (h, _), w in zip(cols, widths)))
for row in rows:
    print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))
print(f"written: {sys.argv[1]}")
PY
exit "$status"
