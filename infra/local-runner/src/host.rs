//! The process host: any function of `template.yaml` run as processes of its own binary, as
//! Lambda runs it, behind the emulated event source mapping.
//!
//! [`FunctionConfig::from_template`] reads what Lambda would know of a function: its binary
//! (`Metadata.BuildProperties.Binary`, built by [`build`] with cargo), its memory and its
//! environment (`Environment.Variables` resolved against the locally provisioned resources,
//! the variables Lambda sets, and the runner's endpoint and credential variables).
//! [`ProcessHost`] is the [`esm::Function`] that runs it: each concurrent invocation gets an
//! execution environment (a process polling a [`RuntimeApi`](crate::runtime_api::RuntimeApi) of
//! its own on 127.0.0.1), reused by later invocations, so the mapping's maximum concurrency
//! bounds the processes. An environment whose invocation runs past the timeout is killed when
//! the mapping gives up on it (its batch comes back); one whose process exits fails its batch
//! and is replaced at the next invocation. Processes die with their host. [`HostChaos`] kills
//! a share of them during their invocations, as a crash or an out-of-memory kill would.
//!
//! Nothing here names a function: [`sqs_triggered_functions`] lists what to host.
//!
//! Layout: `build` runs cargo; `environment` is one process and its Runtime API; `serve` starts
//! a mapping per hosted function (`local-runner serve-queues`).

mod build;
mod environment;
mod serve;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::SqsEvent;
use serde_json::Value;

pub use self::build::{Target, build};
use self::environment::ExecutionEnvironment;
pub use self::serve::{ServeOptions, Serving};
use crate::esm;
use crate::provision::Provisioned;
use crate::template::{Template, TemplateError, scalar_text};

/// The account id in the functions' local ARNs.
const LOCAL_ACCOUNT: &str = "000000000000";

/// Variables of the runner that its functions get too: where the local endpoints are and the
/// credentials for them (Lambda passes a role's credentials as variables, not as a profile),
/// and how to log. So do the `AWS_ENDPOINT_URL*` variables, and the `OTEL_*` ones: where spans
/// go.
const INHERITED: [&str; 8] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CA_BUNDLE",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "PATH",
    "TZ",
];

/// Why a function cannot be hosted.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The template does not say how to build or run the function.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// Cargo could not be run.
    #[error("cannot run cargo")]
    Cargo(#[source] std::io::Error),
    /// `cargo build` failed (its diagnostics are on stderr).
    #[error("`cargo build` of {target} failed ({status})")]
    Build {
        /// The binary.
        target: String,
        /// Cargo's exit status.
        status: std::process::ExitStatus,
    },
    /// `cargo build` succeeded but named no executable for the target.
    #[error("`cargo build` produced no executable named {0}")]
    NoExecutable(String),
}

/// What Lambda knows of a function when it starts an execution environment.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    /// The function's name (`AWS_LAMBDA_FUNCTION_NAME`).
    pub name: String,
    /// Its ARN, sent with each invocation.
    pub arn: String,
    /// The executable to run.
    pub binary: PathBuf,
    /// The process's whole environment, but `AWS_LAMBDA_RUNTIME_API`.
    pub variables: Vec<(String, String)>,
    /// Where the processes' stdout and stderr (their logs and metric lines) are appended;
    /// `None` leaves them on the runner's own.
    pub log: Option<PathBuf>,
}

impl FunctionConfig {
    /// The function `logical_id` of `template`, provisioned as `resources` under the name prefix
    /// `stack`, running `binary`.
    pub fn from_template(
        template: &Template,
        resources: &Provisioned,
        stack: &str,
        logical_id: &str,
        binary: PathBuf,
    ) -> Result<Self, TemplateError> {
        let properties = &template.root()["Resources"][logical_id]["Properties"];
        let globals = &template.root()["Globals"]["Function"];
        let setting = |name: &str| {
            [&properties[name], &globals[name]]
                .into_iter()
                .find(|value| !value.is_null())
        };
        let memory = setting("MemorySize")
            .and_then(|value| template.number(value))
            .unwrap_or(128.0);
        let logging = setting("LoggingConfig");
        let log = |field: &str| logging.and_then(|config| scalar_text(&config[field]));
        let region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
            .into_iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
            .unwrap_or_else(|| "us-east-1".to_owned());
        let name = format!("{stack}-{logical_id}");
        let arn = format!("arn:aws:lambda:{region}:{LOCAL_ACCOUNT}:function:{name}");

        let mut variables: Vec<(String, String)> = std::env::vars()
            .filter(|(key, _)| {
                key.starts_with("AWS_ENDPOINT_URL")
                    || key.starts_with("OTEL_")
                    || INHERITED.contains(&key.as_str())
            })
            .collect();
        variables.extend(resources.function_env(template, logical_id)?);
        let lambda = [
            ("AWS_LAMBDA_FUNCTION_NAME", name.clone()),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                (memory as u64).to_string(),
            ),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME",
                "local/[$LATEST]local".to_owned(),
            ),
            ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023".to_owned()),
            ("AWS_REGION", region.clone()),
            ("AWS_DEFAULT_REGION", region),
            ("_HANDLER", "bootstrap".to_owned()),
        ];
        variables.extend(lambda.map(|(key, value)| (key.to_owned(), value)));
        let logging = [
            ("AWS_LAMBDA_LOG_FORMAT", log("LogFormat")),
            ("AWS_LAMBDA_LOG_LEVEL", log("ApplicationLogLevel")),
        ];
        variables.extend(
            logging
                .into_iter()
                .filter_map(|(key, value)| Some((key.to_owned(), value?))),
        );
        Ok(Self {
            name,
            arn,
            binary,
            variables,
            log: None,
        })
    }
}

/// The binary of the function `logical_id`: `Metadata.BuildProperties.Binary`, as
/// `sam build` with `BuildMethod: rust-cargolambda` reads it.
pub fn binary_name<'a>(template: &'a Template, logical_id: &str) -> Result<&'a str, TemplateError> {
    template.root()["Resources"][logical_id]["Metadata"]["BuildProperties"]["Binary"]
        .as_str()
        .ok_or_else(|| {
            TemplateError::Unsupported(format!(
                "{logical_id}: Metadata.BuildProperties.Binary names no binary"
            ))
        })
}

/// The logical ids of the functions with an SQS event, in template order.
pub fn sqs_triggered_functions(template: &Template) -> Vec<&str> {
    template
        .resources("AWS::Serverless::Function")
        .into_iter()
        .filter(|(_, function)| {
            function["Properties"]["Events"]
                .as_mapping()
                .into_iter()
                .flatten()
                .any(|(_, event)| event["Type"].as_str() == Some("SQS"))
        })
        .map(|(id, _)| id)
        .collect()
}

impl FunctionConfig {
    /// Sets the variable `name` of the process's environment, over the template's value.
    pub fn set_variable(&mut self, name: &str, value: &str) {
        self.variables.retain(|(key, _)| key != name);
        self.variables.push((name.to_owned(), value.to_owned()));
    }
}

/// Chaos of the process host (`make chaos`); the default changes nothing.
#[derive(Debug, Clone, Default)]
pub struct HostChaos {
    /// Share of invocations whose process is killed (SIGKILL) while it runs them: the batch
    /// fails as a whole and comes back after its visibility timeout, as on Lambda.
    pub kill_rate: f64,
    /// The kill comes at a random time within this long after the process took the invocation;
    /// an invocation answered sooner escapes it.
    pub kill_within: Duration,
    /// Counts the processes killed.
    pub killed: Arc<AtomicU64>,
    /// Share of the library's own calls that fail (the guard's store, half of those after
    /// the call was made; the continuation send; the visibility change; the parking; each
    /// attempt on a protected dependency, half of those after the call was made): above 0,
    /// each function's binary is built with the library's fault injectors (feature
    /// `queue-worker/testing`) and started with `QUEUE_WORKER_FAULT_RATE`. Each fault is a
    /// warning in the function's log (field `injected_fault`).
    pub seam_fault_rate: f64,
}

/// The faults injected at the library's seams ([`HostChaos::seam_fault_rate`]) that the
/// functions logged to `log` (their JSON lines, as `ServeOptions::function_log` collects them),
/// by seam; an unreadable or missing log counts none.
pub fn seam_faults(log: &std::path::Path) -> std::collections::BTreeMap<String, u64> {
    let mut faults = std::collections::BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(log) else {
        return faults;
    };
    for line in text.lines().filter(|line| line.contains("injected_fault")) {
        if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(line)
            && let Some(Value::String(seam)) = fields.get("injected_fault")
        {
            *faults.entry(seam.clone()).or_default() += 1;
        }
    }
    faults
}

/// A function run as processes of its binary: the [`esm::Function`] of a mapping. Clones share
/// the execution environments, so one can watch what the mapping's copy does.
#[derive(Clone)]
pub struct ProcessHost {
    function: Arc<FunctionConfig>,
    idle: Arc<Mutex<Vec<ExecutionEnvironment>>>,
    started: Arc<AtomicU64>,
    chaos: HostChaos,
}

impl ProcessHost {
    /// Hosts `function`. No process starts before the first invocation.
    pub fn new(function: FunctionConfig) -> Self {
        Self {
            function: Arc::new(function),
            idle: Arc::default(),
            started: Arc::default(),
            chaos: HostChaos::default(),
        }
    }

    /// The same host with `chaos`.
    pub fn with_chaos(mut self, chaos: HostChaos) -> Self {
        self.chaos = chaos;
        self
    }

    /// Execution environments started so far (cold starts): one per concurrent invocation, and
    /// one more for each that was killed or crashed.
    pub fn environments_started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// An idle environment, or a new one.
    async fn checkout(&self) -> Result<ExecutionEnvironment, environment::Failure> {
        while let Some(mut environment) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            if environment.is_alive() {
                return Ok(environment);
            }
            // Exited while idle: dropped (its PID reaped), and the next one tried.
        }
        self.started.fetch_add(1, Ordering::Relaxed);
        ExecutionEnvironment::start(&self.function).await
    }

    fn release(&self, environment: ExecutionEnvironment) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(environment);
        }
    }
}

impl esm::Function for ProcessHost {
    async fn invoke(&self, event: SqsEvent, deadline: SystemTime) -> Result<Value, String> {
        let event = serde_json::to_value(event).map_err(|e| e.to_string())?;
        let failed = |failure: environment::Failure| {
            let error = queue_worker::telemetry::error_chain(&failure);
            tracing::warn!(function = %self.function.name, error, "invocation failed");
            error
        };
        let mut environment = self.checkout().await.map_err(failed)?;
        let kill_after = (self.chaos.kill_rate > 0.0 && fastrand::f64() < self.chaos.kill_rate)
            .then(|| self.chaos.kill_within.mul_f64(fastrand::f64()));
        let (outcome, killed) = environment.invoke(event, deadline, kill_after).await;
        if killed {
            self.chaos.killed.fetch_add(1, Ordering::Relaxed);
        }
        match outcome {
            Ok(response) => {
                self.release(environment);
                Ok(response)
            }
            Err(failure) => {
                if failure.keeps_environment() {
                    self.release(environment);
                }
                Err(failed(failure))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seam_faults_are_counted_from_the_functions_json_log_lines() {
        let log = std::env::temp_dir().join(format!("seam-faults-{}.log", std::process::id()));
        let lines = [
            r#"{"level":"WARN","message":"fault injected","injected_fault":"guard.complete"}"#,
            r#"{"level":"INFO","message":"injected_fault is only text here"}"#,
            "not json, injected_fault",
            r#"{"level":"WARN","message":"fault injected","injected_fault":"guard.complete"}"#,
            r#"{"level":"WARN","message":"fault injected","injected_fault":"sqs.park"}"#,
        ];
        std::fs::write(&log, lines.join("\n")).unwrap();
        let counted = seam_faults(&log);
        std::fs::remove_file(&log).unwrap();
        assert_eq!(
            counted.into_iter().collect::<Vec<_>>(),
            [("guard.complete".to_owned(), 2), ("sqs.park".to_owned(), 1)]
        );
        assert!(seam_faults(std::path::Path::new("/nonexistent/functions.log")).is_empty());
    }
}
