//! `local-runner`: the template's queue workers on a laptop. See `local-runner --help`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use local_runner::host::{HostChaos, ServeOptions, Serving};
use local_runner::template::Template;
use local_runner::traces::{self, Collector, JobTree};

#[derive(Parser)]
#[command(about = "Runs the template's queue workers locally against an AWS emulator")]
struct Cli {
    /// The SAM template to take resources and settings from.
    #[arg(long, default_value = "template.yaml")]
    template: String,
    /// Prefix of the local resource names.
    #[arg(long, default_value = "local")]
    stack: String,
    /// Override the template's MaximumConcurrency of every event source mapping.
    #[arg(long, global = true)]
    maximum_concurrency: Option<usize>,
    /// Override every hosted function's timeout from the template.
    #[arg(long, global = true, value_name = "SECONDS")]
    function_timeout: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Provision, build every SQS-triggered function of the template (or those named) and run
    /// each as processes of its own binary behind its queue's event source mapping, until Ctrl-C.
    ServeQueues {
        /// A function's logical id (repeatable); none hosts every SQS-triggered function.
        #[arg(long = "function", value_name = "LOGICAL_ID")]
        functions: Vec<String>,
        /// The cargo profile to build the functions with.
        #[arg(long, default_value = "dev")]
        profile: String,
        /// Share of the library's own calls that fail in every hosted binary (the guard's
        /// store, the continuation send, the visibility change, the parking, each attempt on a
        /// protected dependency): the binaries are built with the library's fault injectors.
        /// Each fault is a warning in the log.
        #[arg(long, default_value_t = 0.0, value_name = "RATE")]
        seam_fault_rate: f64,
    },
    /// Print the tree of one job's spans, as the local collector received them (`make trace`).
    Trace {
        /// The job's id: any span attribute with this value (a record's `job_id`) marks the job.
        id: String,
        /// The collector's file.
        #[arg(long, default_value = traces::SPANS_FILE)]
        file: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::ServeQueues {
            functions,
            profile,
            seam_fault_rate,
        } => {
            anyhow::ensure!(
                (0.0..=1.0).contains(&seam_fault_rate),
                "--seam-fault-rate is a share, from 0 to 1"
            );
            let collector =
                traces::collect_unless_configured(Path::new(traces::SPANS_FILE)).await?;
            traces::init_telemetry("info", collector.as_ref());
            let template = Template::load(&cli.template)?;
            let workspace = Path::new(&cli.template)
                .parent()
                .filter(|dir| !dir.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let serve = ServeOptions {
                functions,
                profile,
                maximum_concurrency: cli.maximum_concurrency,
                function_timeout: cli.function_timeout.map(Duration::from_secs),
                environment: collector.iter().flat_map(Collector::environment).collect(),
                host_chaos: HostChaos {
                    seam_fault_rate,
                    ..HostChaos::default()
                },
                ..ServeOptions::default()
            };
            let serving = Serving::start(&template, workspace, &cli.stack, &serve).await?;
            println!("hosting {}; Ctrl-C stops", serving.functions.join(", "));
            if collector.is_some() {
                println!(
                    "spans go to {}: local-runner trace ID prints a job's",
                    traces::SPANS_FILE
                );
            }
            tokio::signal::ctrl_c().await?;
            serving.stop().await;
        }
        Command::Trace { id, file } => {
            let (spans, unreadable) = traces::read(&file).with_context(|| {
                format!(
                    "reading {} (make demo or make run writes it)",
                    file.display()
                )
            })?;
            if unreadable > 0 {
                eprintln!(
                    "{unreadable} lines of {} are not spans: skipped",
                    file.display()
                );
            }
            let tree = JobTree::of(&spans, &id).with_context(|| {
                format!(
                    "no span of the {} in {} carries {id}",
                    spans.len(),
                    file.display()
                )
            })?;
            print!("{tree}");
        }
    }
    Ok(())
}
