//! Init time: from process start to the function's first `GET /runtime/invocation/next`, which
//! is when Lambda's init phase ends. Each binary is started under a fake Runtime API on
//! 127.0.0.1 that records that request and never answers it; then the process is killed.
//!
//! Each binary gets the environment Lambda gives a function ([`LAMBDA_ENVIRONMENT`] and the
//! function's own settings) and nothing of the machine's: variables such as `AWS_CA_BUNDLE`,
//! `SSL_CERT_FILE` or `AWS_ENDPOINT_URL` would change what init does and so what is measured.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;
use tokio::process::Command;

/// The path the runtime client polls for the next event.
const NEXT: &str = "/2018-06-01/runtime/invocation/next";

/// The variables the Lambda service sets for a `provided.al2023` function (besides
/// `AWS_LAMBDA_RUNTIME_API`, set per run), with the values a 128 MB function gets.
pub const LAMBDA_ENVIRONMENT: &[(&str, &str)] = &[
    ("_HANDLER", "bootstrap"),
    ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLEEXAMPLE00"),
    ("AWS_DEFAULT_REGION", "us-east-1"),
    ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023"),
    ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
    ("AWS_LAMBDA_FUNCTION_NAME", "bench"),
    ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
    ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand"),
    ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench"),
    ("AWS_LAMBDA_LOG_STREAM_NAME", "2026/01/01/[$LATEST]bench"),
    ("AWS_REGION", "us-east-1"),
    (
        "AWS_SECRET_ACCESS_KEY",
        "example-secret-access-key-example-example",
    ),
    ("AWS_SESSION_TOKEN", "example-session-token"),
    ("LAMBDA_RUNTIME_DIR", "/var/runtime"),
    ("LAMBDA_TASK_ROOT", "/var/task"),
    ("LANG", "en_US.UTF-8"),
    ("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin"),
    ("TZ", ":UTC"),
];

/// One binary's timings.
#[derive(Debug, Serialize)]
pub struct InitTimes {
    /// Runs measured.
    pub runs: usize,
    /// Median, milliseconds.
    pub median_ms: f64,
    /// 90th percentile, milliseconds.
    pub p90_ms: f64,
    /// Fastest run, milliseconds.
    pub min_ms: f64,
    /// Median over the baseline's median (1.0 for the baseline itself).
    pub ratio_to_baseline: f64,
}

/// One binary to time: its name in the results, its path, and settings of its own on top of
/// the shared ones (the same binary can run twice, e.g. with and without trace export).
#[derive(Debug, Clone)]
pub struct Binary {
    /// Its name in the results.
    pub name: String,
    /// The executable.
    pub path: PathBuf,
    /// Variables set for this binary only, after the shared settings.
    pub settings: Vec<(String, String)>,
}

/// Times `binaries` `runs` times each, interleaved, and compares each median with the one
/// named `baseline`. Each run's environment is [`LAMBDA_ENVIRONMENT`], `settings` (the
/// functions' own variables, as the template sets them) and the binary's own settings.
pub async fn measure(
    binaries: &[Binary],
    settings: &[(String, String)],
    runs: usize,
    baseline: &str,
) -> anyhow::Result<BTreeMap<String, InitTimes>> {
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for _ in 0..runs {
        for binary in binaries {
            let all: Vec<(String, String)> =
                settings.iter().chain(&binary.settings).cloned().collect();
            let elapsed = once(&binary.path, &all)
                .await
                .with_context(|| format!("timing {} ({})", binary.name, binary.path.display()))?;
            samples
                .entry(&binary.name)
                .or_default()
                .push(elapsed.as_secs_f64() * 1000.0);
        }
    }
    let base = samples
        .get(baseline)
        .map(|s| percentile(s, 0.5))
        .with_context(|| format!("no baseline binary named {baseline}"))?;
    Ok(samples
        .into_iter()
        .map(|(name, s)| {
            let median = percentile(&s, 0.5);
            let times = InitTimes {
                runs: s.len(),
                median_ms: median,
                p90_ms: percentile(&s, 0.9),
                min_ms: percentile(&s, 0.0),
                ratio_to_baseline: median / base,
            };
            (name.to_owned(), times)
        })
        .collect())
}

/// Starts `path` once under a fresh fake Runtime API and returns the time to its first poll.
async fn once(path: &PathBuf, settings: &[(String, String)]) -> anyhow::Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let api = listener.local_addr()?.to_string();
    let started = Instant::now();
    let mut child = Command::new(path)
        .env_clear()
        .envs(LAMBDA_ENVIRONMENT.iter().copied())
        .envs(settings.iter().map(|(k, v)| (k, v)))
        .env("AWS_LAMBDA_RUNTIME_API", &api)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let polled = tokio::time::timeout(Duration::from_secs(30), first_poll(&listener)).await;
    let elapsed = started.elapsed();
    child.kill().await.ok();
    match polled {
        Ok(Ok(())) => Ok(elapsed),
        Ok(Err(e)) => Err(e),
        Err(_) => bail!("no poll of {NEXT} within 30 s (did the function fail its init?)"),
    }
}

/// Accepts connections until one sends `GET` [`NEXT`].
async fn first_poll(listener: &TcpListener) -> anyhow::Result<()> {
    loop {
        let (mut stream, _) = listener.accept().await?;
        let mut head = [0u8; 256];
        let mut read = 0;
        while read < head.len() {
            let n = stream.read(&mut head[read..]).await?;
            if n == 0 {
                break;
            }
            read += n;
            if head[..read].windows(2).any(|w| w == b"\r\n") {
                break;
            }
        }
        let line = String::from_utf8_lossy(&head[..read]);
        if line.starts_with(&format!("GET {NEXT}")) {
            return Ok(());
        }
    }
}

/// The `q` quantile (0.0 to 1.0) of `samples`, nearest rank.
pub fn percentile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(percentile(&samples, 0.0), 1.0);
        assert_eq!(percentile(&samples, 0.5), 3.0);
        assert_eq!(percentile(&samples, 0.9), 5.0);
    }
}
