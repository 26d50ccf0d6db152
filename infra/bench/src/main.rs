//! `queue-bench`: the parts of `make bench` that are not criterion, a domain's bench or a
//! domain's cold start (its driver's `cold-start`, on [`queue_bench::cold_start`]).
//!   queue-bench init-time --runs 30 --out target/bench/init.json hello-world=PATH name=PATH ...
//!   queue-bench report --dir target/bench --criterion target/criterion

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use queue_bench::cold_start::parse_setting;
use queue_bench::{init_time, report};

#[derive(Parser)]
#[command(about = "Benchmarks of the queue workers (run them with `make bench`)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time each binary from start to its first poll of a fake Runtime API.
    InitTime {
        /// Runs per binary (interleaved).
        #[arg(long, default_value_t = 30)]
        runs: usize,
        /// Where to write the JSON results.
        #[arg(long)]
        out: PathBuf,
        /// The binary the others are compared with.
        #[arg(long, default_value = "hello-world")]
        baseline: String,
        /// A function setting, `NAME=VALUE` (repeat): every binary gets these on top of the
        /// variables Lambda sets, and nothing else of this process's environment.
        #[arg(long = "env", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
        /// A variant (repeat): every binary but the baseline is timed a second time with this
        /// `NAME=VALUE` added, in the same interleaved series, as `<name> with NAME=VALUE`.
        #[arg(long = "variant", value_parser = parse_setting)]
        variants: Vec<(String, String)>,
        /// `name=path` of each binary.
        #[arg(required = true, value_parser = parse_binary)]
        binaries: Vec<(String, PathBuf)>,
    },
    /// Assemble report.md and report.json from the step outputs.
    Report {
        /// The directory the steps wrote to.
        #[arg(long)]
        dir: PathBuf,
        /// Criterion's output directory.
        #[arg(long)]
        criterion: PathBuf,
    },
}

fn parse_binary(value: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = value
        .split_once('=')
        .ok_or_else(|| format!("expected name=path, got {value:?}"))?;
    Ok((name.to_owned(), PathBuf::from(path)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::InitTime {
            runs,
            out,
            baseline,
            settings,
            variants,
            binaries,
        } => {
            let mut timed = Vec::new();
            for (name, path) in binaries {
                let plain = init_time::Binary {
                    name: name.clone(),
                    path: path.clone(),
                    settings: Vec::new(),
                };
                timed.push(plain);
                if name == baseline {
                    continue;
                }
                for (variable, value) in &variants {
                    timed.push(init_time::Binary {
                        name: format!("{name} with {variable}={value}"),
                        path: path.clone(),
                        settings: vec![(variable.clone(), value.clone())],
                    });
                }
            }
            let times = init_time::measure(&timed, &settings, runs, &baseline).await?;
            let text = serde_json::to_string_pretty(&times)?;
            std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
            println!("{text}");
        }
        Command::Report { dir, criterion } => {
            print!("{}", report::write(&dir, &criterion, &machine())?);
        }
    }
    Ok(())
}

/// CPU model, cores and kernel, for the report's header.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, Linux {kernel}, {}",
        std::env::consts::ARCH
    )
}
