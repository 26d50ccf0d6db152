//! The `cold-start` command every domain driver offers (`make bench` runs it): the arguments
//! and what they run, so a driver only names its functions and its [`Workload`].
//!
//! ```ignore
//! #[derive(clap::Subcommand)]
//! enum Command {
//!     ColdStart(queue_bench::cold_start::Args),
//! }
//! // ...
//! Command::ColdStart(args) => args.run(my_tests::cold_start::FUNCTIONS, MyWorkload::create).await?,
//! ```

use std::path::{Path, PathBuf};

use anyhow::ensure;

use super::{Binary, Setup, Workload, binaries_in, exporting, measure, parse_binary};

/// Time init, the first invocation and a warm one of each binary (`make bench`), every AWS
/// request over TLS to the emulator (`AWS_ENDPOINT_URL`) through a listener with a private CA;
/// the events are the domain's workload's, or the `hello-world` baseline's.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Runs per binary (interleaved).
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Where to write the JSON results; the CA and each binary's output of its last run go to
    /// the same directory.
    #[arg(long)]
    pub out: PathBuf,
    /// The build the report's targets apply to (default: the first binary's).
    #[arg(long)]
    pub shipped: Option<String>,
    /// A function setting, `NAME=VALUE` (repeat), on top of Lambda's variables and the
    /// resources and endpoints the benchmark creates.
    #[arg(long = "env", value_parser = parse_setting)]
    pub settings: Vec<(String, String)>,
    /// `build=dir` of a `cargo lambda build --lambda-dir` (repeat): times the baseline and each
    /// of the workload's functions of that build, `dir/<binary>/bootstrap`.
    #[arg(long = "lambda-dir", value_parser = parse_setting)]
    pub lambda_dirs: Vec<(String, String)>,
    /// Times the binaries of this build again with their spans exported to a collector on
    /// 127.0.0.1 (build `<BUILD>+trace-export`): what export costs at init and per invocation,
    /// whose flush is in its time.
    #[arg(long, value_name = "BUILD")]
    pub trace_export_of: Option<String>,
    /// `function@build=path` of each further binary: one of the workload's functions, or
    /// `hello-world`.
    #[arg(value_parser = parse_binary)]
    pub binaries: Vec<Binary>,
}

impl Args {
    /// Times the binaries against the workload `create` makes (whose events cover
    /// `functions`), writes the results to `--out` and prints them.
    pub async fn run<W, F>(
        self,
        functions: &[&str],
        create: impl FnOnce(Setup) -> F,
    ) -> anyhow::Result<()>
    where
        W: Workload,
        F: Future<Output = anyhow::Result<W>>,
    {
        let mut binaries = self.binaries;
        for (build, dir) in self.lambda_dirs.iter().rev() {
            binaries.splice(0..0, binaries_in(build, Path::new(dir), functions));
        }
        if let Some(build) = &self.trace_export_of {
            let copies = exporting(&binaries, build);
            ensure!(
                !copies.is_empty(),
                "--trace-export-of {build}: no binary of that build"
            );
            binaries.extend(copies);
        }
        ensure!(
            !binaries.is_empty(),
            "no binaries: give --lambda-dir or paths"
        );
        let shipped = self.shipped.unwrap_or_else(|| binaries[0].build.clone());
        let logs = self.out.parent().unwrap_or(Path::new("."));
        let results = measure(&binaries, &self.settings, self.runs, &shipped, logs, create).await?;
        let text = serde_json::to_string_pretty(&results)?;
        std::fs::write(&self.out, &text)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", self.out.display()))?;
        println!("{text}");
        Ok(())
    }
}

/// Parses `NAME=VALUE`.
pub fn parse_setting(value: &str) -> Result<(String, String), String> {
    let (name, setting) = value
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {value:?}"))?;
    Ok((name.to_owned(), setting.to_owned()))
}
