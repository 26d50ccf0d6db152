//! `notifier-driver`: the real notifier binary hosted locally against a counting fake partner
//! (run, demo, chaos). See `notifier-driver --help`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use local_runner::traces::{self, Collector};
use notifier_tests::driver::{self, ChaosKnobs, Common};
use notifier_tests::partner::PartnerBehaviour;
use serde_json::json;

#[derive(Parser)]
#[command(about = "Hosts the notifier's binary locally against an AWS emulator and a fake partner")]
struct Cli {
    /// The SAM template to take resources and settings from.
    #[arg(long, default_value = "template.yaml")]
    template: PathBuf,
    /// Prefix of the local resource names.
    #[arg(long, default_value = "local")]
    stack: String,
    /// The cargo profile to build the notifier's binary with (by default the driver's own).
    #[arg(long, global = true, default_value = if cfg!(debug_assertions) { "dev" } else { "release" })]
    profile: String,
    /// Override the template's MaximumConcurrency of the event source mapping.
    #[arg(long, global = true)]
    maximum_concurrency: Option<usize>,
    /// Override the notifier's function timeout from the template.
    #[arg(long, global = true, value_name = "SECONDS")]
    function_timeout: Option<u64>,
    /// Flaky-partner mode of `run` and `demo`: the partner answers this share (0 to 1) of its
    /// calls 503 or 429 without acting, to watch retries and the adaptive limit.
    #[arg(long, global = true, default_value_t = 0.0, value_name = "RATE")]
    flaky_downstream: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time init, the first invocation and a warm one of each binary (`make bench`), every AWS
    /// request and the partner call over TLS; the events are the notifier's (a batch of one job
    /// whose notification is delivered) or the `hello-world` baseline's.
    ColdStart(queue_bench::cold_start::Args),
    /// Provision, host the notifier and its fake partner until Ctrl-C; each line on stdin is
    /// requested as a notification's payload.
    Run,
    /// Request a burst of notifications (a third of them again), drain, and check that each
    /// took effect exactly once at the partner.
    Demo {
        /// Notifications in the burst.
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Also write the outcome as JSON to this file.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// The chaos soak (`make chaos`): the demo's burst under kills, duplicate deliveries, a
    /// partner that throttles, fails after acting or hangs past the client's timeout, and has a
    /// capacity; checked and measured, the report written as JSON.
    Chaos {
        /// Notifications in the burst.
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// Where to write the report.
        #[arg(long, default_value = "target/chaos/report-notifier.json")]
        report: PathBuf,
        /// `adaptive` only: the notifier's limit on partner calls is adaptive in its code
        /// (`fixed` is accepted and skipped, with a report that says so).
        #[arg(long, default_value = "adaptive", value_parser = ["adaptive", "fixed"])]
        concurrency_limit: String,
        /// Not supported: the real binary has no panic injection (a non-zero rate is reported,
        /// not applied).
        #[arg(long, default_value_t = 0.0)]
        panic_rate: f64,
        /// Share of invocations whose process is killed (SIGKILL) during the invocation.
        #[arg(long, default_value_t = 0.1)]
        kill_rate: f64,
        /// A kill comes within this many ms after the process took the invocation.
        #[arg(long, default_value_t = 300, value_name = "MS")]
        kill_within: u64,
        /// Share of received messages also delivered to a second, concurrent invocation.
        #[arg(long, default_value_t = 0.05)]
        duplicate_rate: f64,
        /// Share of the library's own calls that fail in the notifier's binary (the guard's
        /// store, the visibility change, the parking, each attempt on the partner; half of the
        /// store's writes and of the partner calls fail after they were made).
        #[arg(long, default_value_t = 0.02)]
        seam_fault_rate: f64,
        /// Visibility timeout of each receive: a failed batch comes back after it.
        #[arg(long, default_value_t = 10, value_name = "SECONDS")]
        visibility_timeout: u64,
        /// Share of partner calls answered 503 or 429 without acting.
        #[arg(long, default_value_t = 0.05)]
        throttle_rate: f64,
        /// Share of partner calls that act, then answer 500.
        #[arg(long, default_value_t = 0.05)]
        fail_after_effect_rate: f64,
        /// Share of partner calls that act, then hang past the client's timeout.
        #[arg(long, default_value_t = 0.03)]
        hang_after_effect_rate: f64,
        /// The partner's most concurrent calls (C); 429 beyond.
        #[arg(long, default_value_t = 4)]
        capacity: usize,
        /// The partner's most calls per second (R); 429 beyond.
        #[arg(long, default_value_t = 25.0)]
        rate: f64,
        /// The partner's time to answer a call, in ms.
        #[arg(long, default_value_t = 20, value_name = "MS")]
        latency: u64,
        /// A broken partner that acts on every call, whatever its key: the check must fail.
        #[arg(long)]
        ignore_key: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let level = if matches!(cli.command, Command::Run) {
        "info"
    } else {
        "error"
    };
    // `run` and `demo` export every span, the hosted functions' too, to a collector on
    // 127.0.0.1: `make trace ID=...`.
    let collector = match cli.command {
        Command::Run | Command::Demo { .. } => {
            traces::collect_unless_configured(Path::new(traces::SPANS_FILE)).await?
        }
        Command::Chaos { .. } | Command::ColdStart(_) => None,
    };
    traces::init_telemetry(level, collector.as_ref());
    anyhow::ensure!(
        (0.0..=1.0).contains(&cli.flaky_downstream),
        "the flaky-downstream rate must be between 0 and 1"
    );
    let common = Common {
        template: cli.template,
        stack: cli.stack,
        profile: cli.profile,
        maximum_concurrency: cli.maximum_concurrency,
        function_timeout: cli.function_timeout.map(Duration::from_secs),
        flaky_partner: cli.flaky_downstream,
        function_environment: collector.iter().flat_map(Collector::environment).collect(),
    };
    match cli.command {
        Command::Run => driver::run(&common).await,
        Command::ColdStart(args) => {
            args.run(
                notifier_tests::cold_start::FUNCTIONS,
                notifier_tests::cold_start::NotifierWorkload::create,
            )
            .await
        }
        Command::Demo {
            requests,
            timeout,
            report,
        } => {
            let outcome = driver::demo(&common, requests, Duration::from_secs(timeout)).await?;
            outcome.print();
            if let Some(report) = report {
                write(&report, &outcome.report("adaptive", json!({})))?;
            }
            anyhow::ensure!(outcome.verdict.passed(), "the demo's check failed");
            Ok(())
        }
        Command::Chaos {
            requests,
            timeout,
            report,
            concurrency_limit,
            panic_rate,
            kill_rate,
            kill_within,
            duplicate_rate,
            seam_fault_rate,
            visibility_timeout,
            throttle_rate,
            fail_after_effect_rate,
            hang_after_effect_rate,
            capacity,
            rate,
            latency,
            ignore_key,
        } => {
            if concurrency_limit == "fixed" {
                let reason = "the notifier's limit on partner calls is adaptive in its code";
                println!("chaos with a fixed concurrency limit: skipped ({reason})");
                let skipped = json!({
                    "domain": "notifier",
                    "maximum_concurrency": common.maximum_concurrency,
                    "concurrency_limit": "fixed",
                    "skipped": reason,
                    "summary": {
                        "conc": common.maximum_concurrency,
                        "limit": "fixed",
                        "pass": "skipped: unsupported",
                    },
                    "summary_columns": ["conc", "limit", "pass"],
                });
                return write(&report, &skipped);
            }
            let defaults = ChaosKnobs::default();
            let knobs = ChaosKnobs {
                kill_rate,
                kill_within: Duration::from_millis(kill_within),
                duplicate_rate,
                seam_fault_rate,
                visibility_timeout: Duration::from_secs(visibility_timeout),
                partner: PartnerBehaviour {
                    honours_key: !ignore_key,
                    latency: Duration::from_millis(latency),
                    throttle_rate,
                    fail_after_effect_rate,
                    hang_after_effect_rate,
                    capacity: Some(capacity),
                    rate: Some(rate),
                    ..defaults.partner
                },
            };
            let (outcome, mut knobs) =
                driver::chaos(&common, requests, Duration::from_secs(timeout), &knobs).await?;
            knobs["panic_rate"] = if panic_rate > 0.0 {
                json!(format!(
                    "{panic_rate} requested, not supported: not applied"
                ))
            } else {
                json!(0.0)
            };
            outcome.print();
            write(&report, &outcome.report("adaptive", knobs))?;
            anyhow::ensure!(outcome.verdict.passed(), "the chaos soak's check failed");
            Ok(())
        }
    }
}

fn write(path: &std::path::Path, report: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(report)?)?;
    println!("report: {}", path.display());
    Ok(())
}
