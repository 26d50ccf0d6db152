#!/usr/bin/env bash
# `make bench`: every benchmark, then one report at target/bench/report.md (and report.json).
# The functions are those of template.yaml (each one's Metadata.BuildProperties.Binary); the
# domain-specific steps run every domain's tooling crate (tests/domains/NAME, see
# domain_packages in infra/lib/common.sh), so a worker added or removed needs no edit here;
# DOMAINS="name ..." runs only those domains' steps (the size and init steps still time every
# function of the template).
#   1. size: every function built for Lambda (cargo lambda, release), stripped and zipped,
#      x86_64 and (unless BENCH_ARM64=0) arm64
#   2. init time: process start to the first poll of a fake Runtime API, against hello-world,
#      each function with its own environment from the template, and again with trace export
#      on (OTEL_EXPORTER_OTLP_ENDPOINT set: the exporter is built at init, nothing is sent)
#   2b. cold start over TLS: init, the first invocation and a warm one, every AWS request over
#      TLS (a private CA), for each domain driver's functions (its `cold-start` command, with
#      its own workload) and a hello world that makes one HTTPS request, as shipped and with
#      aws-lc's CPU-jitter entropy on (built into target/bench-jitter)
#   3. per-record overhead (criterion) and the Python peer (Powertools) in the same run
#   4. each domain's own benches (cargo bench --benches; results as JSON in target/bench)
#   5. drain time of each domain driver's demo at maximum concurrency 2, 5 and 10
#      (BENCH_DRAIN_REQUESTS requests, default 1000; BENCH_DRAIN=0 skips it)
# Starts the emulator unless it is already running, and then stops it again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

# Absolute: cargo runs benches from their package's folder.
out="$PWD/target/bench"
tools=infra/tools/tools.sh
emulator=infra/emulator/emulator.sh
mkdir -p "$out"
step() { printf '\n==> %s\n' "$*"; }
# shellcheck source=infra/lib/common.sh
source infra/lib/common.sh
require_domains

# Every function's binary, as template.yaml builds it.
mapfile -t functions < <("$tools" python3 - template.yaml <<'PY'
import sys, yaml
class Loader(yaml.SafeLoader):
    pass
Loader.add_multi_constructor("!", lambda loader, tag, node: None)
for resource in yaml.load(open(sys.argv[1]), Loader)["Resources"].values():
    if resource.get("Type") == "AWS::Serverless::Function":
        print(resource["Metadata"]["BuildProperties"]["Binary"])
PY
)
echo "functions: ${functions[*]}"

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
    for package in "${functions[@]}"; do
        "$tools" cargo lambda build --release "$flag" --lambda-dir "$out/lambda-$arch" -p "$package"
    done
done
for package in hello-lambda hello-tls-lambda; do
    "$tools" cargo lambda build --release --x86-64 --lambda-dir "$out/lambda-x86_64" -p "$package"
done
# Zipped as `sam deploy` zips them (deflate).
python3 - "$out" "${functions[*]}" "${arches[@]}" <<'PY'
import json, os, sys, zipfile
out, functions, arches = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
sizes = []
for arch in arches:
    for function in functions:
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
# Each binary gets Lambda's own variables (queue-bench sets them) and its function's settings
# (its environment as the template sets it: parameters at their defaults, a stand-in name or
# queue URL for each resource), and nothing of this shell's; each function is timed in its own
# interleaved series against hello-world.
lambda="$out/lambda-x86_64"
settings_of() {
    "$tools" python3 - template.yaml "$1" <<'PY'
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

for function, resource in resources.items():
    if resource.get("Type") == "AWS::Serverless::Function" \
            and resource["Metadata"]["BuildProperties"]["Binary"] == sys.argv[2]:
        variables = resource["Properties"].get("Environment", {}).get("Variables", {})
        for name, value in variables.items():
            print(f"{name}={deployed(f'{function}: {name}', value)}")
PY
}
inits=()
for function in "${functions[@]}"; do
    mapfile -t settings < <(settings_of "$function")
    cargo run --quiet -p queue-bench --bin queue-bench -- init-time --runs "${BENCH_INIT_RUNS:-100}" \
        --out "$out/init-$function.json" "${settings[@]/#/--env=}" \
        --variant=OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 \
        "hello-world=$lambda/hello-lambda/bootstrap" "$function=$lambda/$function/bootstrap"
    inits+=("$out/init-$function.json")
done
# One table: each function's series, and the baseline of the first.
python3 -c 'import json,sys; m={}; [m.update({k: v for k, v in json.load(open(f)).items() if k not in m}) for f in sys.argv[2:]]; json.dump(m, open(sys.argv[1], "w"), indent=2)' \
    "$out/init.json" "${inits[@]}"

step "cold start over TLS (x86_64, ${BENCH_COLD_RUNS:-20} interleaved runs each)"
# The same code built with aws-lc's CPU-jitter entropy source, which .cargo/config.toml leaves
# out of what ships: its own target directory, so the main one is not rebuilt back and forth.
jitter="$out/lambda-x86_64-jitter"
for package in "${functions[@]}" hello-tls-lambda; do
    AWS_LC_SYS_NO_JITTER_ENTROPY=0 CARGO_TARGET_DIR="$PWD/target/bench-jitter" \
        "$tools" cargo lambda build --release --x86-64 --lambda-dir "$jitter" -p "$package"
done
while read -r package binary; do
    # A driver without a cold-start workload is skipped, and says so.
    if ! cargo run --quiet -p "$package" --bin "$binary" -- cold-start --help >/dev/null 2>&1; then
        echo "$binary has no cold-start command: skipped"
        continue
    fi
    cargo run --quiet -p "$package" --bin "$binary" -- cold-start --runs "${BENCH_COLD_RUNS:-20}" \
        --out "$out/cold_start-$package.json" --shipped shipped --trace-export-of shipped \
        --lambda-dir "shipped=$lambda" --lambda-dir "jitter-entropy=$jitter"
done < <(domain_drivers)

step "per-record overhead: criterion, then Powertools for AWS Lambda (Python)"
cargo bench -p queue-worker --bench batch_overhead
infra/bench/powertools/run.sh --json "$out/powertools.json"

step "each domain's own benches (emulator)"
while read -r package name; do
    domain_selected "$name" || continue
    BENCH_DIR="$out" cargo bench -p "$package" --benches
done < <(domain_packages)

if [[ "${BENCH_DRAIN:-1}" != 0 ]]; then
    step "local pipeline drain time"
    drains=()
    while read -r package binary; do
        for concurrency in 2 5 10; do
            cargo run --quiet -p "$package" --bin "$binary" -- --maximum-concurrency "$concurrency" \
                demo --requests "${BENCH_DRAIN_REQUESTS:-1000}" \
                --timeout 3600 --report "$out/drain-$package-$concurrency.json"
            drains+=("$out/drain-$package-$concurrency.json")
        done
    done < <(domain_drivers)
    python3 -c 'import json,sys; json.dump([json.load(open(f)) for f in sys.argv[2:]], open(sys.argv[1], "w"), indent=2)' \
        "$out/drain.json" "${drains[@]}"
fi

step "report"
cargo run --quiet -p queue-bench --bin queue-bench -- report --dir "$out" --criterion target/criterion
echo "written: $out/report.md, $out/report.json"
REQUESTS="${BENCH_CHAOS_REQUESTS:-1000}" infra/chaos.sh "$out/chaos"
