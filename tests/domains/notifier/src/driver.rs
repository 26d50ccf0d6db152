//! What `notifier-driver` runs: `demo` and `chaos` (a checked burst, [`crate::soak`]) and `run`
//! (the notifier kept up to try by hand).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use local_runner::template::Template;
use notifier::NotificationId;
use serde_json::json;
use tokio::io::AsyncBufReadExt as _;

use crate::hosted::{HostSettings, Hosted};
use crate::partner::PartnerBehaviour;
use crate::soak::{self, Outcome};

/// The function's timeout in the chaos soak unless overridden: a killed claim's lease (the
/// timeout plus the 1 s margin set below) ends soon after its batch comes back.
pub const CHAOS_FUNCTION_TIMEOUT: Duration = Duration::from_secs(8);

/// Settings of every command.
#[derive(Debug, Clone)]
pub struct Common {
    /// The template (its directory is the cargo workspace).
    pub template: PathBuf,
    /// Prefix of the local resource names; each demo and chaos run adds its own suffix.
    pub stack: String,
    /// The cargo profile the notifier's binary is built with.
    pub profile: String,
    /// Overrides the mapping's `MaximumConcurrency`.
    pub maximum_concurrency: Option<usize>,
    /// Overrides the function's timeout.
    pub function_timeout: Option<Duration>,
    /// Share of calls the partner of `run` and `demo` answers 503 or 429 without acting.
    pub flaky_partner: f64,
    /// Variables every hosted function gets: where its spans go.
    pub function_environment: Vec<(String, String)>,
}

impl Common {
    fn load(&self) -> anyhow::Result<(Template, PathBuf)> {
        let template = Template::load(&self.template.to_string_lossy())?;
        let workspace = self
            .template
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Ok((template, workspace))
    }

    /// A fresh name per run, so runs never see each other's notifications; the functions'
    /// logs go to a file (the driver's output is the show).
    fn host(&self, suffix: &str) -> HostSettings {
        let stack = format!("{}-{suffix}-{}", self.stack, std::process::id());
        HostSettings {
            function_log: Some(std::env::temp_dir().join(format!("{stack}-functions.log"))),
            stack,
            profile: self.profile.clone(),
            maximum_concurrency: self.maximum_concurrency,
            function_timeout: self.function_timeout,
            environment: self.function_environment.clone(),
            partner: PartnerBehaviour {
                throttle_rate: self.flaky_partner,
                ..PartnerBehaviour::default()
            },
            ..HostSettings::default()
        }
    }
}

/// The chaos soak's knobs.
#[derive(Debug, Clone)]
pub struct ChaosKnobs {
    /// Share of invocations whose process is killed during the invocation.
    pub kill_rate: f64,
    /// A kill comes within this long after the process took the invocation.
    pub kill_within: Duration,
    /// Share of received messages also handed to a second, concurrent invocation.
    pub duplicate_rate: f64,
    /// Share of the library's own calls that fail in the binary (`HostChaos::seam_fault_rate`).
    pub seam_fault_rate: f64,
    /// Visibility timeout of each receive: a failed batch comes back after it.
    pub visibility_timeout: Duration,
    /// The partner (its faults and capacity).
    pub partner: PartnerBehaviour,
}

impl Default for ChaosKnobs {
    fn default() -> Self {
        Self {
            kill_rate: 0.1,
            kill_within: Duration::from_millis(300),
            duplicate_rate: 0.05,
            seam_fault_rate: 0.02,
            visibility_timeout: Duration::from_secs(10),
            partner: PartnerBehaviour {
                latency: Duration::from_millis(20),
                throttle_rate: 0.05,
                fail_after_effect_rate: 0.05,
                hang_after_effect_rate: 0.03,
                // Past the client's timeout, DOWNSTREAM_TIMEOUT_MS below.
                hang: Duration::from_secs(2),
                capacity: Some(4),
                rate: Some(25.0),
                ..PartnerBehaviour::default()
            },
        }
    }
}

impl ChaosKnobs {
    fn json(&self) -> serde_json::Value {
        let p = &self.partner;
        json!({
            "kill_rate": self.kill_rate,
            "kill_within_ms": self.kill_within.as_millis() as u64,
            "duplicate_rate": self.duplicate_rate,
            "seam_fault_rate": self.seam_fault_rate,
            "visibility_timeout_seconds": self.visibility_timeout.as_secs(),
            "partner": {
                "honours_key": p.honours_key,
                "latency_ms": p.latency.as_millis() as u64,
                "throttle_rate": p.throttle_rate,
                "fail_after_effect_rate": p.fail_after_effect_rate,
                "hang_after_effect_rate": p.hang_after_effect_rate,
                "hang_ms": p.hang.as_millis() as u64,
                "capacity": p.capacity,
                "rate": p.rate,
            },
            "function_environment": CHAOS_ENVIRONMENT
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// Settings of the hosted notifier in the chaos soak, over the template's: retries come back
/// within seconds, a killed claim's lease ends a second after the invocation's timeout, a
/// hanging partner call is given up after 1 s, and an open circuit tries again after 5 s.
pub const CHAOS_ENVIRONMENT: [(&str, &str); 4] = [
    ("RETRY_BACKOFF_BASE_SECONDS", "1"),
    ("IDEMPOTENCY_LEASE_MARGIN_SECONDS", "1"),
    ("DOWNSTREAM_TIMEOUT_MS", "1000"),
    ("CIRCUIT_OPEN_SECONDS", "5"),
];

/// `demo`: `requests` notifications to a well-behaved partner, checked.
pub async fn demo(common: &Common, requests: usize, timeout: Duration) -> anyhow::Result<Outcome> {
    let (template, workspace) = common.load()?;
    let settings = common.host("demo");
    let mut hosted = Hosted::start(&template, &workspace, &settings).await?;
    println!(
        "hosting the notifier binary (maximum concurrency {}, its logs in {}); requesting \
         {requests} notifications, a third of them again (client retries)",
        hosted.maximum_concurrency,
        log_path(&settings),
    );
    soak::run(&mut hosted, requests, timeout).await
}

/// `chaos`: the same burst under `knobs`, checked and measured.
pub async fn chaos(
    common: &Common,
    requests: usize,
    timeout: Duration,
    knobs: &ChaosKnobs,
) -> anyhow::Result<(Outcome, serde_json::Value)> {
    let (template, workspace) = common.load()?;
    let mut settings = common.host("chaos");
    settings.function_timeout = common.function_timeout.or(Some(CHAOS_FUNCTION_TIMEOUT));
    settings.environment.extend(
        CHAOS_ENVIRONMENT
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    settings.partner = knobs.partner.clone();
    settings.kill_rate = knobs.kill_rate;
    settings.kill_within = knobs.kill_within;
    settings.duplicate_rate = knobs.duplicate_rate;
    settings.seam_fault_rate = knobs.seam_fault_rate;
    settings.visibility_timeout = Some(knobs.visibility_timeout);
    let mut hosted = Hosted::start(&template, &workspace, &settings).await?;
    println!(
        "chaos: the notifier binary at maximum concurrency {}, {requests} notifications; kills \
         {:.0}%, duplicate deliveries {:.0}%, library seam faults {:.0}%, partner faults (throttled {:.0}%, act then fail \
         {:.0}%, act then hang {:.0}%), partner capacity {:?} concurrent, {:?}/s; the \
         notifier's logs in {}",
        hosted.maximum_concurrency,
        knobs.kill_rate * 100.0,
        knobs.duplicate_rate * 100.0,
        knobs.seam_fault_rate * 100.0,
        knobs.partner.throttle_rate * 100.0,
        knobs.partner.fail_after_effect_rate * 100.0,
        knobs.partner.hang_after_effect_rate * 100.0,
        knobs.partner.capacity,
        knobs.partner.rate,
        log_path(&settings),
    );
    let outcome = soak::run(&mut hosted, requests, timeout).await?;
    let mut knobs = knobs.json();
    knobs["function_timeout_seconds"] = json!(hosted.function_timeout.as_secs_f64());
    Ok((outcome, knobs))
}

fn log_path(settings: &HostSettings) -> String {
    settings
        .function_log
        .as_ref()
        .map_or_else(|| "this terminal".to_owned(), |p| p.display().to_string())
}

/// `run`: hosts the notifier with a well-behaved partner until Ctrl-C; each line read from
/// stdin is requested as a notification's payload.
pub async fn run(common: &Common) -> anyhow::Result<()> {
    let (template, workspace) = common.load()?;
    let settings = HostSettings {
        stack: common.stack.clone(),
        function_log: None,
        ..common.host("run")
    };
    let mut hosted = Hosted::start(&template, &workspace, &settings).await?;
    println!(
        "hosting the notifier binary: table {}, queue {}, fake partner {}",
        hosted.table_name,
        hosted.queue_url,
        hosted.partner.url()
    );
    println!(
        "type a JSON payload and Enter to request a notification (e.g. {{\"text\":\"hello\"}}); \
         Ctrl-C stops"
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line.context("reading stdin")? else { break };
                if line.trim().is_empty() {
                    continue;
                }
                let id = NotificationId::generate();
                match notifier::request(&hosted.store, &hosted.jobs, id, line.trim()).await {
                    Ok(requested) => println!(
                        "notification {id}: {requested:?}; the partner will see key {}",
                        id.partner_key()
                    ),
                    Err(e) => println!("notification {id}: {}", queue_worker::telemetry::error_chain(&e)),
                }
                let _ = std::io::stdout().flush();
            }
            signal = tokio::signal::ctrl_c() => {
                signal?;
                break;
            }
        }
    }
    let ledger = hosted.partner.ledger();
    println!("the partner saw {} keys:", ledger.len());
    for (key, seen) in ledger {
        println!(
            "  {key}: {} calls, {} effects",
            seen.calls,
            seen.effects.len()
        );
    }
    hosted.stop().await;
    Ok(())
}
