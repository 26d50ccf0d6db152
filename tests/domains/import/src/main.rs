//! `import-driver`: the import example's pipeline on a laptop (run, demo, chaos). See
//! `import-driver --help`.

use std::path::Path;
use std::time::Duration;

use clap::{Parser, Subcommand};
use import_tests::chaos::{self, Chaos, Knobs};
use import_tests::demo::{self, Burst};
use import_tests::pipeline::{Options, Pipeline};
use local_runner::template::Template;
use local_runner::traces;

#[derive(Parser)]
#[command(about = "Runs the import example's pipeline locally against an AWS emulator")]
struct Cli {
    /// The SAM template to take resources and settings from.
    #[arg(long, default_value = "template.yaml")]
    template: String,
    /// Prefix of the local resource names.
    #[arg(long, default_value = "local")]
    stack: String,
    /// Override the template's MaximumConcurrency of the event source mapping.
    #[arg(long, global = true)]
    maximum_concurrency: Option<usize>,
    /// Override the processor's function timeout from the template (the demo's default is
    /// short, so that its large files take several chunks).
    #[arg(long, global = true, value_name = "SECONDS")]
    function_timeout: Option<u64>,
    /// Flaky-downstream mode: fail this share (0 to 1) of the writes to the items table, as a
    /// throttling table would, to watch retries and the circuit breaker.
    #[arg(long, global = true, default_value_t = 0.0, value_name = "RATE")]
    flaky_downstream: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Provision, then serve the API and run the processor until Ctrl-C.
    Run {
        /// Port of the API on 127.0.0.1.
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
    /// Provision, fire a burst of imports, watch them drain, and check every outcome.
    Demo {
        /// Import requests in the burst (`--requests` is the same, the name every driver takes).
        #[arg(long, alias = "requests", default_value_t = 500)]
        imports: usize,
        /// Rows per small file.
        #[arg(long, default_value_t = 20)]
        rows: usize,
        /// Large files among the imports, spread over the burst: each takes several chunks.
        #[arg(long, default_value_t = 3)]
        large_files: usize,
        /// Rows per large file.
        #[arg(long, default_value_t = 15_000)]
        large_rows: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Also write the outcome as JSON to this file.
        #[arg(long)]
        report: Option<std::path::PathBuf>,
    },
    /// Time init, the first invocation and a warm one of each binary (`make bench`), every AWS
    /// request over TLS; the events are the import example's (`import-producer`: a request;
    /// `import-processor`: a batch of one job whose 10-row file is imported) or the
    /// `hello-world` baseline's.
    ColdStart(queue_bench::cold_start::Args),
    /// The chaos soak (`make chaos`): a burst like the demo's under kills, duplicate
    /// deliveries, faults on every AWS call path and a capacity-limited items downstream;
    /// checked and measured, the report written as JSON.
    Chaos {
        /// Import requests in the burst (2% poison, 10% client retries).
        #[arg(long, alias = "requests", default_value_t = 10_000)]
        imports: usize,
        /// Rows per small file.
        #[arg(long, default_value_t = 10)]
        rows: usize,
        /// Large files among the imports: each takes several chunks.
        #[arg(long, default_value_t = 4)]
        large_files: usize,
        /// Rows per large file.
        #[arg(long, default_value_t = 15_000)]
        large_rows: usize,
        /// Share of invocations killed at a random time.
        #[arg(long, default_value_t = 0.03)]
        kill_rate: f64,
        /// Share of invocations killed at a kill point (claim, item write, commit, complete),
        /// one chosen at random.
        #[arg(long, default_value_t = 0.03)]
        kill_point_rate: f64,
        /// Share of received messages also delivered to a second, concurrent invocation.
        #[arg(long, default_value_t = 0.05)]
        duplicate_rate: f64,
        /// Share of calls failed on each AWS path (guard, imports, S3, SQS).
        #[arg(long, default_value_t = 0.02)]
        fault_rate: f64,
        /// Share of S3 reads cut mid-object.
        #[arg(long, default_value_t = 0.05)]
        cut_rate: f64,
        /// The items downstream's most concurrent requests (C).
        #[arg(long, default_value_t = 4)]
        capacity: usize,
        /// The items downstream's most requests per second (R).
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Visibility timeout of each receive, overriding the queue's: a killed batch comes
        /// back after it.
        #[arg(long, default_value_t = 10, value_name = "SECONDS")]
        visibility_timeout: u64,
        /// The downstream's service time per request in ms: a fake partner API (rows counted in
        /// memory). 0 writes to the items table in the emulator instead.
        #[arg(long, default_value_t = 20, value_name = "MS")]
        downstream_latency: u64,
        /// Share of item writes that panic.
        #[arg(long, default_value_t = 0.0)]
        panic_rate: f64,
        /// How each execution environment limits its concurrent item writes: `adaptive` (AIMD
        /// on throttling) or `fixed` (the configuration's bound).
        #[arg(long, default_value = "adaptive", value_parser = ["adaptive", "fixed"])]
        concurrency_limit: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// Where to write the report.
        #[arg(long, default_value = "target/chaos/report.json")]
        report: std::path::PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The demo's own output is the show: only errors from the pipeline, unless RUST_LOG asks.
    let level = if matches!(cli.command, Command::Demo { .. } | Command::Chaos { .. }) {
        "error"
    } else {
        "info"
    };
    // `run` and `demo` export every span to a collector on 127.0.0.1: `make trace ID=...`.
    let collector = match cli.command {
        Command::Run { .. } | Command::Demo { .. } => {
            traces::collect_unless_configured(Path::new(traces::SPANS_FILE)).await?
        }
        _ => None,
    };
    traces::init_telemetry(level, collector.as_ref());
    let template = Template::load(&cli.template)?;
    let mut options = Options {
        port: 0,
        maximum_concurrency: cli.maximum_concurrency,
        function_timeout: cli.function_timeout.map(Duration::from_secs),
        downstream_failure_rate: cli.flaky_downstream,
        chaos: None,
    };
    match cli.command {
        Command::Run { port } => {
            options.port = port;
            let pipeline = Pipeline::start(&template, &cli.stack, &options).await?;
            println!(
                "API on {} (POST /imports, GET /imports/{{id}}); Ctrl-C stops",
                pipeline.base_url
            );
            if collector.is_some() {
                println!("an import's trace: make trace ID=<import id>");
            }
            tokio::signal::ctrl_c().await?;
            pipeline.stop().await;
        }
        Command::Demo {
            imports,
            rows,
            large_files,
            large_rows,
            timeout,
            report,
        } => {
            // A fresh name per run, so runs never see each other's imports.
            let stack = format!("{}-demo-{}", cli.stack, std::process::id());
            options
                .function_timeout
                .get_or_insert(demo::FUNCTION_TIMEOUT);
            let pipeline = Pipeline::start(&template, &stack, &options).await?;
            let burst = Burst::new(
                imports,
                (rows, large_files, large_rows),
                Duration::from_secs(timeout),
                pipeline.maximum_concurrency,
            );
            let outcome = demo::run(&pipeline, burst, report.as_deref()).await;
            pipeline.stop().await;
            outcome?;
        }
        Command::ColdStart(args) => {
            args.run(
                import_tests::cold_start::FUNCTIONS,
                import_tests::cold_start::ImportWorkload::create,
            )
            .await?;
        }
        Command::Chaos {
            imports,
            rows,
            large_files,
            large_rows,
            kill_rate,
            kill_point_rate,
            duplicate_rate,
            fault_rate,
            cut_rate,
            capacity,
            rate,
            visibility_timeout,
            downstream_latency,
            panic_rate,
            concurrency_limit,
            timeout,
            report,
        } => {
            for (name, value) in [
                ("kill rate", kill_rate),
                ("kill point rate", kill_point_rate),
                ("duplicate rate", duplicate_rate),
                ("fault rate", fault_rate),
                ("cut rate", cut_rate),
                ("panic rate", panic_rate),
            ] {
                anyhow::ensure!(
                    (0.0..=1.0).contains(&value),
                    "the {name} must be between 0 and 1"
                );
            }
            anyhow::ensure!(rate > 0.0 && capacity > 0, "C and R must be positive");
            let stack = format!("{}-chaos-{}", cli.stack, std::process::id());
            options
                .function_timeout
                .get_or_insert(demo::FUNCTION_TIMEOUT);
            let chaos = std::sync::Arc::new(Chaos::new(Knobs {
                kill_rate,
                kill_point_rate,
                duplicate_rate,
                fault_rate,
                cut_rate,
                capacity,
                rate,
                visibility_timeout: Duration::from_secs(visibility_timeout),
                panic_rate,
                adaptive: concurrency_limit == "adaptive",
                latency: Duration::from_millis(downstream_latency),
            }));
            options.chaos = Some(std::sync::Arc::clone(&chaos));
            let pipeline = Pipeline::start(&template, &stack, &options).await?;
            let burst = Burst::new(
                imports,
                (rows, large_files, large_rows),
                Duration::from_secs(timeout),
                pipeline.maximum_concurrency,
            );
            let outcome = chaos::run(&pipeline, &chaos, burst, &report).await;
            pipeline.stop().await;
            outcome?;
        }
    }
    Ok(())
}
