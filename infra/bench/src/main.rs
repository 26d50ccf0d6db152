//! `import-bench`: the parts of `make bench` that are not criterion or a test-harness bench.
//!   import-bench init-time --runs 30 --out target/bench/init.json hello-world=PATH name=PATH ...
//!   import-bench cold-start --runs 20 --out target/bench/cold_start.json kind@build=PATH ...
//!   import-bench report --dir target/bench --criterion target/criterion

mod cold_start;
mod init_time;
mod report;
mod tls_proxy;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Benchmarks of the import pipeline (run them with `make bench`)")]
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
        /// `name=path` of each binary.
        #[arg(required = true, value_parser = parse_binary)]
        binaries: Vec<(String, PathBuf)>,
    },
    /// Time init, the first invocation and a warm one of each binary, every AWS request over
    /// TLS to the emulator (`AWS_ENDPOINT_URL`) through a listener with a private CA.
    ColdStart {
        /// Runs per binary (interleaved).
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Where to write the JSON results; the CA and each binary's output of its last run go
        /// to the same directory.
        #[arg(long)]
        out: PathBuf,
        /// The build the report's targets apply to (default: the first binary's).
        #[arg(long)]
        shipped: Option<String>,
        /// A function setting, `NAME=VALUE` (repeat), on top of Lambda's variables and the
        /// tables, bucket, queues and endpoints the benchmark creates.
        #[arg(long = "env", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
        /// `kind@build=path` of each binary; kind is hello-world, import-producer or
        /// import-processor.
        #[arg(required = true, value_parser = cold_start::parse_binary)]
        binaries: Vec<cold_start::Binary>,
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

fn parse_setting(value: &str) -> Result<(String, String), String> {
    let (name, setting) = value
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {value:?}"))?;
    Ok((name.to_owned(), setting.to_owned()))
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
            binaries,
        } => {
            let times = init_time::measure(&binaries, &settings, runs, &baseline).await?;
            let text = serde_json::to_string_pretty(&times)?;
            std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
            println!("{text}");
        }
        Command::ColdStart {
            runs,
            out,
            shipped,
            settings,
            binaries,
        } => {
            let shipped = shipped.unwrap_or_else(|| binaries[0].build.clone());
            let logs = out.parent().unwrap_or(std::path::Path::new("."));
            let results = cold_start::measure(&binaries, &settings, runs, &shipped, logs).await?;
            let text = serde_json::to_string_pretty(&results)?;
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
