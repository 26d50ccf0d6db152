#!/usr/bin/env bash
# `make bench`: every benchmark, then one report at target/bench/report.md (and report.json).
#   1. size: both functions built for Lambda (cargo lambda, release), stripped and zipped,
#      x86_64 and (unless BENCH_ARM64=0) arm64
#   2. init time: process start to the first poll of a fake Runtime API, against hello-world
#   2b. cold start over TLS: init, the first invocation and a warm one, every AWS request over
#      TLS (a private CA), for both functions and a hello world that makes one HTTPS request,
#      as shipped and with aws-lc's CPU-jitter entropy on (built into target/bench-jitter)
#   3. per-record overhead (criterion) and the Python peer (Powertools) in the same run
#   4. request budget and memory of the real processor against the emulator
#   5. drain time of the local pipeline at maximum concurrency 2, 5 and 10
#      (BENCH_DRAIN_IMPORTS requests, default 1000; BENCH_DRAIN=0 skips it)
# Starts the emulator unless it is already running, and then stops it again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

# Absolute: cargo runs benches from their package's folder.
out="$PWD/target/bench"
tools=infra/tools/tools.sh
emulator=infra/emulator/emulator.sh
mkdir -p "$out"
step() { printf '\n==> %s\n' "$*"; }

if ! "$emulator" status >/dev/null 2>&1; then
    trap '"$emulator" down' EXIT
    "$emulator" up
fi
eval "$("$emulator" env)"

step "size: release builds for Lambda"
arches=(x86_64)
[[ "${BENCH_ARM64:-1}" == 0 ]] || arches+=(arm64)
for arch in "${arches[@]}"; do
    flag=--x86-64
    [[ "$arch" == arm64 ]] && flag=--arm64
    # One package per build, as `sam build` does: building them together would unify their
    # dependencies' features and measure binaries nobody deploys.
    for package in import-producer import-processor; do
        "$tools" cargo lambda build --release "$flag" --lambda-dir "$out/lambda-$arch" -p "$package"
    done
done
for package in hello-lambda hello-tls-lambda; do
    "$tools" cargo lambda build --release --x86-64 --lambda-dir "$out/lambda-x86_64" -p "$package"
done
# Zipped as `sam deploy` zips them (deflate).
python3 - "$out" "${arches[@]}" <<'PY'
import json, os, sys, zipfile
out, arches = sys.argv[1], sys.argv[2:]
sizes = []
for arch in arches:
    for function in ("import-producer", "import-processor"):
        bootstrap = os.path.join(out, f"lambda-{arch}", function, "bootstrap")
        archive = bootstrap + ".zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(bootstrap, "bootstrap")
        sizes.append({"function": function, "arch": arch,
                      "bootstrap_bytes": os.path.getsize(bootstrap),
                      "zip_bytes": os.path.getsize(archive)})
json.dump(sizes, open(os.path.join(out, "sizes.json"), "w"), indent=2)
PY

step "init time (x86_64, ${BENCH_INIT_RUNS:-100} interleaved runs each)"
# Each binary gets Lambda's own variables (import-bench sets them) and the functions' settings
# (the union of both functions' environments as the template sets them: parameters at their
# defaults, a stand-in name or queue URL for each resource), and nothing of this shell's.
lambda="$out/lambda-x86_64"
settings_text="$("$tools" python3 - template.yaml <<'PY'
import re, sys, yaml

class Loader(yaml.SafeLoader):
    """Reads SAM's short-form intrinsic functions (!Ref X) as their long form ({Ref: X})."""

def intrinsic(loader, tag, node):
    construct = {yaml.ScalarNode: loader.construct_scalar, yaml.SequenceNode: loader.construct_sequence,
                 yaml.MappingNode: loader.construct_mapping}[type(node)]
    return {tag if tag == "Ref" else "Fn::" + tag: construct(node)}

Loader.add_multi_constructor("!", intrinsic)
template = yaml.load(open(sys.argv[1]), Loader)
parameters, resources = template.get("Parameters", {}), template["Resources"]

def deployed(where, value):
    ref = value.get("Ref") if isinstance(value, dict) else None
    if ref in resources:
        stand_in = "bench-" + re.sub(r"(?<!^)(?=[A-Z])", "-", ref).lower()
        if resources[ref]["Type"] == "AWS::SQS::Queue":
            stand_in = "https://sqs.us-east-1.amazonaws.com/123456789012/" + stand_in
        return stand_in
    if ref in parameters:
        value = parameters[ref]["Default"]
    if isinstance(value, (dict, list)):
        sys.exit(f"{where}: only literals and !Ref are read here, not {value}")
    return str(value)

settings = {}
for function, resource in resources.items():
    if resource["Type"] == "AWS::Serverless::Function":
        variables = resource["Properties"].get("Environment", {}).get("Variables", {})
        for name, value in variables.items():
            value = deployed(f"{function}: {name}", value)
            if settings.setdefault(name, value) != value:
                sys.exit(f"{function}: {name} differs from another function: {value}")
print("\n".join(f"{name}={value}" for name, value in settings.items()))
PY
)"
mapfile -t settings <<<"$settings_text"
cargo run --quiet -p import-bench --bin import-bench -- init-time --runs "${BENCH_INIT_RUNS:-100}" \
    --out "$out/init.json" "${settings[@]/#/--env=}" \
    "hello-world=$lambda/hello-lambda/bootstrap" \
    "import-producer=$lambda/import-producer/bootstrap" \
    "import-processor=$lambda/import-processor/bootstrap"

step "cold start over TLS (x86_64, ${BENCH_COLD_RUNS:-20} interleaved runs each)"
# The same code built with aws-lc's CPU-jitter entropy source, which .cargo/config.toml leaves
# out of what ships: its own target directory, so the main one is not rebuilt back and forth.
jitter="$out/lambda-x86_64-jitter"
for package in import-producer import-processor hello-tls-lambda; do
    AWS_LC_SYS_NO_JITTER_ENTROPY=0 CARGO_TARGET_DIR="$PWD/target/bench-jitter" \
        "$tools" cargo lambda build --release --x86-64 --lambda-dir "$jitter" -p "$package"
done
cargo run --quiet -p import-bench --bin import-bench -- cold-start --runs "${BENCH_COLD_RUNS:-20}" \
    --out "$out/cold_start.json" --shipped shipped \
    "hello-world@shipped=$lambda/hello-tls-lambda/bootstrap" \
    "import-producer@shipped=$lambda/import-producer/bootstrap" \
    "import-processor@shipped=$lambda/import-processor/bootstrap" \
    "hello-world@jitter-entropy=$jitter/hello-tls-lambda/bootstrap" \
    "import-producer@jitter-entropy=$jitter/import-producer/bootstrap" \
    "import-processor@jitter-entropy=$jitter/import-processor/bootstrap"

step "per-record overhead: criterion, then Powertools for AWS Lambda (Python)"
cargo bench -p queue-worker --bench batch_overhead
infra/bench/powertools/run.sh --json "$out/powertools.json"

step "request budget and memory of the processor (emulator)"
BENCH_JSON="$out/request_budget.json" cargo bench -p import-tests --bench request_budget
BENCH_JSON="$out/memory.json" cargo bench -p import-tests --bench processor_memory
BENCH_JSON="$out/job_throughput.json" cargo bench -p import-tests --bench job_throughput

if [[ "${BENCH_DRAIN:-1}" != 0 ]]; then
    step "local pipeline drain time"
    for concurrency in 2 5 10; do
        cargo run --quiet -p import-tests --bin import-driver -- --maximum-concurrency "$concurrency" demo \
            --imports "${BENCH_DRAIN_IMPORTS:-1000}" --timeout 3600 \
            --report "$out/drain-$concurrency.json"
    done
    python3 -c 'import json,sys; json.dump([json.load(open(f)) for f in sys.argv[2:]], open(sys.argv[1], "w"), indent=2)' \
        "$out/drain.json" "$out"/drain-{2,5,10}.json
fi

step "report"
cargo run --quiet -p import-bench --bin import-bench -- report --dir "$out" --criterion target/criterion
echo "written: $out/report.md, $out/report.json"
IMPORTS="${BENCH_CHAOS_IMPORTS:-1000}" infra/chaos.sh "$out/chaos"
