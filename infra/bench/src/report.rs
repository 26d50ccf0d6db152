//! The benchmark report: reads the JSON each step of `make bench` wrote under one directory and
//! writes `report.md` (for people and the README) and `report.json` (everything, merged).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

/// Targets from the benchmark issues. The processor's init stays about 1.6× hello-world's, held
/// there by the relocations of a position-independent binary (ASLR stays on): the init ratio is
/// a regression check.
const INIT_RATIO_TARGET: f64 = 1.7;
/// The processor's cold penalty on its first batch over TLS (first − warm invocation, median).
const COLD_PENALTY_TARGET_MS: f64 = 15.0;
const ZIP_TARGET_BYTES: f64 = 5_000_000.0;
const OVERHEAD_TARGET_US: f64 = 5.0;
const PEER_RATIO_TARGET: f64 = 50.0;
const MEMORY_TARGET_MIB: f64 = 40.0;

fn read(dir: &Path, name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join(name)).ok()?;
    serde_json::from_str(&text).ok()
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

/// Per-record overhead from criterion's estimates: `(case, batch) -> µs per record`.
fn criterion_us(root: &Path, case: &str, batch: u64) -> Option<f64> {
    let path = root
        .join("batch_overhead")
        .join(case)
        .join(batch.to_string())
        .join("new/estimates.json");
    let estimates: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    Some(estimates["median"]["point_estimate"].as_f64()? / 1000.0 / batch as f64)
}

/// The cold-start section: one row per function and build, then the init regression check.
fn cold_start(md: &mut String, cold: &Value) -> anyhow::Result<()> {
    writeln!(
        md,
        "## Cold start over TLS (init, first invocation, warm invocation)\n\n\
         Each of {} interleaved runs starts the release binary under a fake Runtime API and hands \
         it two events; every AWS request goes over TLS to the emulator through a local listener \
         whose private CA `AWS_CA_BUNDLE` names. Times are median / p90; the cold penalty is \
         first − warm of the same run. Handshakes are TLS connections accepted per run \
         (DynamoDB / S3 / SQS / the workload's own downstream, such as a partner API); one handshake's time runs from the listener's TCP accept to the \
         end of the handshake (client and listener, a debug build, together). Build `{}` is what ships; `jitter-entropy` is the same code \
         built with aws-lc's CPU-jitter entropy source (`AWS_LC_SYS_NO_JITTER_ENTROPY=0`).\n",
        cold["runs"],
        cold["shipped_build"].as_str().unwrap_or("?"),
    )?;
    writeln!(
        md,
        "| function | build | init | first invocation | warm invocation | cold penalty | handshakes, first | handshakes, warm | one handshake | target: penalty ≤ {COLD_PENALTY_TARGET_MS} ms |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|")?;
    let time = |t: &Value| {
        format!(
            "{:.1} / {:.1} ms",
            t["median_ms"].as_f64().unwrap_or(f64::NAN),
            t["p90_ms"].as_f64().unwrap_or(f64::NAN)
        )
    };
    let handshakes = |phase: &Value| {
        ["dynamodb", "s3", "sqs", "downstream"]
            .iter()
            .map(|service| {
                let (min, max) = (&phase[service]["min"], &phase[service]["max"]);
                if min == max {
                    min.to_string()
                } else {
                    format!("{min}-{max}")
                }
            })
            .collect::<Vec<_>>()
            .join(" / ")
    };
    for b in cold["binaries"].as_array().into_iter().flatten() {
        let function = b["function"].as_str().unwrap_or("?");
        let target = if b["targeted"] == true && b["build"] == cold["shipped_build"] {
            let penalty = b["penalty"]["median_ms"].as_f64().unwrap_or(f64::NAN);
            verdict(penalty <= COLD_PENALTY_TARGET_MS)
        } else {
            "-"
        };
        writeln!(
            md,
            "| {function} | {} | {} | {} | {} | {} | {} | {} | {} | {target} |",
            b["build"].as_str().unwrap_or("?"),
            time(&b["init"]),
            time(&b["first"]),
            time(&b["warm"]),
            time(&b["penalty"]),
            handshakes(&b["handshakes"]["first"]),
            handshakes(&b["handshakes"]["warm"]),
            time(&b["handshake"]),
        )?;
    }
    writeln!(md)?;
    Ok(())
}

/// Writes `report.md` and `report.json` into `dir`, from the step outputs in `dir` and the
/// criterion results under `criterion`. `machine` describes where it ran.
pub fn write(dir: &Path, criterion: &Path, machine: &str) -> anyhow::Result<String> {
    let mut md = String::new();
    let mut all = serde_json::Map::new();
    writeln!(md, "# Benchmarks\n\nMachine: {machine}\n")?;

    if let Some(init) = read(dir, "init.json") {
        writeln!(
            md,
            "## Init time (process start to the first `/invocation/next`)\n"
        )?;
        writeln!(
            md,
            "| binary | runs | median | p90 | min | × hello-world | regression check ≤ {INIT_RATIO_TARGET}× |"
        )?;
        writeln!(md, "|---|---|---|---|---|---|---|")?;
        for (name, t) in init.as_object().into_iter().flatten() {
            let ratio = t["ratio_to_baseline"].as_f64().unwrap_or(f64::NAN);
            let target = if name == "hello-world" {
                "baseline"
            } else {
                verdict(ratio <= INIT_RATIO_TARGET)
            };
            writeln!(
                md,
                "| {name} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {ratio:.2} | {target} |",
                t["runs"],
                t["median_ms"].as_f64().unwrap_or(0.0),
                t["p90_ms"].as_f64().unwrap_or(0.0),
                t["min_ms"].as_f64().unwrap_or(0.0)
            )?;
        }
        writeln!(md)?;
        all.insert("init".into(), init);
    }

    // One file per domain driver's run (`cold_start-<package>.json`), each with its own
    // hello-world baseline.
    let mut colds: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("cold_start") && name.ends_with(".json"))
        .collect();
    colds.sort();
    for name in colds {
        if let Some(cold) = read(dir, &name) {
            cold_start(&mut md, &cold)?;
            all.insert(name.trim_end_matches(".json").into(), cold);
        }
    }

    if let Some(sizes) = read(dir, "sizes.json") {
        writeln!(md, "## Size (stripped `bootstrap`, and zipped)\n")?;
        writeln!(
            md,
            "| function | architecture | bootstrap | zipped | target ≤ 5 MB zipped |"
        )?;
        writeln!(md, "|---|---|---|---|---|")?;
        for s in sizes.as_array().into_iter().flatten() {
            let zipped = s["zip_bytes"].as_f64().unwrap_or(f64::NAN);
            writeln!(
                md,
                "| {} | {} | {:.2} MB | {:.2} MB | {} |",
                s["function"].as_str().unwrap_or("?"),
                s["arch"].as_str().unwrap_or("?"),
                s["bootstrap_bytes"].as_f64().unwrap_or(0.0) / 1e6,
                zipped / 1e6,
                verdict(zipped <= ZIP_TARGET_BYTES)
            )?;
        }
        writeln!(md)?;
        all.insert("sizes".into(), sizes);
    }

    let peer = read(dir, "powertools.json");
    let mut overhead = Vec::new();
    for (case, label) in [
        ("noop", "batch processor, no-op handler"),
        (
            "guarded",
            "batch processor + idempotency guard (in-memory store)",
        ),
    ] {
        for batch in [10u64, 100] {
            let Some(rust) = criterion_us(criterion, case, batch) else {
                continue;
            };
            let python = peer.as_ref().and_then(|p| {
                p["cases"].as_array()?.iter().find_map(|c| {
                    (c["name"] == case && c["batch"] == batch)
                        .then(|| c["median_us_per_record"].as_f64())
                        .flatten()
                })
            });
            overhead.push(json!({"case": case, "label": label, "batch": batch,
                "rust_us_per_record": rust, "powertools_us_per_record": python}));
        }
    }
    if !overhead.is_empty() {
        let versions = peer.as_ref().map_or_else(String::new, |p| {
            format!(
                " (Powertools {} on Python {})",
                p["powertools"].as_str().unwrap_or("?"),
                p["python"].as_str().unwrap_or("?")
            )
        });
        writeln!(md, "## Per-record overhead, side by side{versions}\n")?;
        writeln!(
            md,
            "| workload | batch | this template | Powertools (Python) | ratio | target ≤ {OVERHEAD_TARGET_US} µs, ≥ {PEER_RATIO_TARGET}× |"
        )?;
        writeln!(md, "|---|---|---|---|---|---|")?;
        for o in &overhead {
            let rust = o["rust_us_per_record"].as_f64().unwrap_or(f64::NAN);
            let python = o["powertools_us_per_record"].as_f64();
            let ratio = python.map(|p| p / rust);
            writeln!(
                md,
                "| {} | {} | {rust:.2} µs | {} | {} | {} |",
                o["label"].as_str().unwrap_or("?"),
                o["batch"],
                python.map_or("-".into(), |p| format!("{p:.2} µs")),
                ratio.map_or("-".into(), |r| format!("{r:.0}×")),
                if o["case"] == "guarded" {
                    format!(
                        "{}, {}",
                        verdict(rust <= OVERHEAD_TARGET_US),
                        ratio.map_or("-", |r| verdict(r >= PEER_RATIO_TARGET))
                    )
                } else {
                    verdict(rust <= OVERHEAD_TARGET_US).to_owned()
                }
            )?;
        }
        writeln!(md)?;
        all.insert("overhead".into(), Value::Array(overhead));
    }

    if let Some(budget) = read(dir, "request_budget.json") {
        writeln!(
            md,
            "## Request budget per record (counted on the wire, against the emulator)\n"
        )?;
        // A domain's bench names its columns: `[key, title]`, each case's `key` holding its
        // requests to that place (`{"PutItem": 1, ...}`).
        let columns: Vec<(String, String)> = budget["columns"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|column| {
                Some((
                    column.get(0)?.as_str()?.to_owned(),
                    column.get(1)?.as_str()?.to_owned(),
                ))
            })
            .collect();
        let titles: String = columns
            .iter()
            .map(|(_, title)| format!(" {title} |"))
            .collect();
        writeln!(md, "| record | outcome |{titles} reads | target |")?;
        writeln!(md, "|---|---|{}---|---|", "---|".repeat(columns.len()))?;
        let requests = |counts: &Value| {
            let list: Vec<String> = counts
                .as_object()
                .into_iter()
                .flatten()
                .map(|(operation, n)| format!("{operation} {n}"))
                .collect();
            if list.is_empty() {
                "-".to_owned()
            } else {
                list.join(", ")
            }
        };
        for case in budget["cases"].as_array().into_iter().flatten() {
            let target = match case["target_met"].as_bool() {
                Some(met) => verdict(met),
                None => "-",
            };
            let cells: String = columns
                .iter()
                .map(|(key, _)| format!(" {} |", requests(&case[key.as_str()])))
                .collect();
            writeln!(
                md,
                "| {} | {} |{cells} {} | {target} |",
                case["description"].as_str().unwrap_or("?"),
                case["status"].as_str().unwrap_or("?"),
                case["reads"],
            )?;
        }
        writeln!(md)?;
        all.insert("request_budget".into(), budget);
    }

    if let Some(memory) = read(dir, "memory.json") {
        let peak = memory["peak_rss_mib"].as_f64().unwrap_or(f64::NAN);
        writeln!(md, "## Memory\n")?;
        writeln!(
            md,
            "A batch of {} jobs of {:.0} MiB files: peak RSS **{peak:.1} MiB** ({:.1} MiB before the batch); target ≤ {MEMORY_TARGET_MIB} MB: {}.\n",
            memory["files"],
            memory["file_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            memory["rss_before_mib"].as_f64().unwrap_or(f64::NAN),
            verdict(peak * 1.048576 <= MEMORY_TARGET_MIB)
        )?;
        all.insert("memory".into(), memory);
    }

    if let Some(drain) = read(dir, "drain.json") {
        writeln!(md, "## Local pipeline drain time (a curve, not a target)\n")?;
        writeln!(
            md,
            "| domain | requests | maximum concurrency | drain time | throughput |"
        )?;
        writeln!(md, "|---|---|---|---|---|")?;
        for d in drain.as_array().into_iter().flatten() {
            // Each domain's demo report: its requests (`requests`, or `requested`) and drain time.
            let requests = d.get("requests").unwrap_or(&d["requested"]);
            let seconds = d["drain_seconds"].as_f64().unwrap_or(f64::NAN);
            writeln!(
                md,
                "| {} | {requests} | {} | {seconds:.1} s | {:.1} requests/s |",
                d["domain"].as_str().unwrap_or("?"),
                d["maximum_concurrency"],
                requests.as_f64().unwrap_or(f64::NAN) / seconds,
            )?;
        }
        writeln!(md)?;
        all.insert("drain".into(), drain);
    }

    all.insert("machine".into(), Value::String(machine.to_owned()));
    std::fs::write(dir.join("report.md"), &md)?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&Value::Object(all))?,
    )?;
    Ok(md)
}
