//! A worker's Lambda entry: [`run_worker`] is the whole of its `main`.
//!
//! ```ignore
//! #[tokio::main]
//! async fn main() -> Result<(), lambda_runtime::Error> {
//!     queue_worker::lambda::run_worker(MyWorker::from_init).await
//! }
//! ```
//!
//! At init it sets up tracing, reads the [`WorkerSettings`] every worker shares (the guard's
//! table, batch concurrency and deadline margin, backoff, the dead-letter queue, the job queue
//! for continuations, the metrics namespace), loads the SDK configuration, and asks the worker's
//! own constructor for the worker, handing it an [`Init`] to read its settings and build its
//! clients from. Then, for every invocation, [`handle_batch`] runs the batch and prints its
//! metrics line ([`crate::metrics`]).
//!
//! The production seams (the DynamoDB guard store, SQS for backoff, parking and continuations)
//! are built here; tests, the local runner and the benches put their own seams in with
//! [`WorkerSettings::processor_with`], so they run the very processor `main` runs.
//!
//! A function that is no queue worker (an HTTP API) starts with [`start`]: tracing, its own
//! configuration and the SDK configuration, in one call.
//!
//! Both entries implement the check-config mode ([`crate::check`]): started with
//! `QUEUE_WORKER_CHECK_CONFIG=1`, the binary reads its configuration exactly as here, prints it
//! and exits, without contacting anything. A worker's own settings are in that report when its
//! constructor reads them through [`Init::config`].

use std::cell::RefCell;
use std::fmt::Debug;
use std::time::SystemTime;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::LambdaEvent;

use crate::aws::SdkSettings;
use crate::batch::{BatchProcessor, BatchSettings, QueueActions, RecordHandler, SqsQueueActions};
use crate::check::{self, Report};
use crate::config::{ConfigError, Env, GuardConfig};
use crate::idempotency::{DynamoDbStore, GuardSettings, IdempotencyGuard, IdempotencyStore};
use crate::job::{JobQueue, SqsJobQueue};
use crate::metrics::{DEFAULT_NAMESPACE, counting, lines, oldest_message_age};
use crate::telemetry::LogSettings;
use crate::worker::{Idempotent, Worker};

/// What every worker is configured with, read once at init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSettings {
    /// The idempotency guard ([`GuardConfig`]: `IDEMPOTENCY_*`).
    pub guard: GuardConfig,
    /// How batches are processed ([`BatchSettings`]: `BATCH_*`, `RETRY_BACKOFF_*`).
    pub batch: BatchSettings,
    /// Where permanent failures are parked (`DEAD_LETTER_QUEUE_URL`).
    pub dead_letter_queue_url: String,
    /// Where continuations are sent (`JOB_QUEUE_URL`): the queue the jobs come from. Required
    /// only by a worker that continues ([`Worker::CONTINUES`]).
    pub job_queue_url: Option<String>,
    /// The namespace of the metrics line (`METRICS_NAMESPACE`, default
    /// [`DEFAULT_NAMESPACE`]).
    pub metrics_namespace: String,
}

impl WorkerSettings {
    /// Reads the settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            guard: GuardConfig::from_env(env)?,
            batch: BatchSettings::from_env(env)?,
            dead_letter_queue_url: env.required("DEAD_LETTER_QUEUE_URL")?,
            job_queue_url: env.get("JOB_QUEUE_URL").map(str::to_owned),
            metrics_namespace: env
                .get("METRICS_NAMESPACE")
                .unwrap_or(DEFAULT_NAMESPACE)
                .to_owned(),
        })
    }

    /// Reads the settings for worker `W`: `JOB_QUEUE_URL` is required when `W` continues, so a
    /// deployment that forgot it fails at init, not at an import's second chunk.
    pub fn for_worker<W: Worker>(env: &Env) -> Result<Self, ConfigError> {
        let settings = Self::from_env(env)?;
        if W::CONTINUES && settings.job_queue_url.is_none() {
            return Err(ConfigError::Missing {
                name: "JOB_QUEUE_URL".into(),
            });
        }
        Ok(settings)
    }

    /// The batch processor running `worker` behind the idempotency guard on `store`, sending
    /// continuations to `jobs` and backing off and parking with `queue`, with these settings.
    pub fn processor_with<W, S, J, A>(
        &self,
        worker: W,
        store: S,
        jobs: J,
        queue: A,
    ) -> BatchProcessor<Idempotent<W, S, J>, A>
    where
        W: Worker,
        S: IdempotencyStore,
        J: JobQueue<W::Job>,
        A: QueueActions,
    {
        let guard = IdempotencyGuard::new(store, GuardSettings::from(&self.guard));
        BatchProcessor::new(Idempotent::new(worker, guard, jobs), queue, self.batch)
    }

    /// The production processor for `worker`: the guard on DynamoDB, and SQS clients built only
    /// when a record first fails or a job first continues (a healthy environment of jobs that
    /// fit one invocation never needs them).
    pub fn processor<W: Worker>(&self, worker: W, sdk: &SdkConfig) -> LambdaProcessor<W> {
        let (store, jobs, queue) = self.production_seams(sdk);
        self.processor_with(worker, store, jobs, queue)
    }

    fn production_seams(
        &self,
        sdk: &SdkConfig,
    ) -> (DynamoDbStore, Option<SqsJobQueue>, SqsQueueActions) {
        (
            DynamoDbStore::new(aws_sdk_dynamodb::Client::new(sdk), &self.guard.table_name),
            self.job_queue_url
                .as_deref()
                .map(|url| SqsJobQueue::on_first_send(sdk, url)),
            SqsQueueActions::on_first_failure(sdk, &self.dead_letter_queue_url),
        )
    }
}

/// The variable that turns the seams' faults on in a worker's binary built with the feature
/// `testing`: the rate (0 to 1) of `testing::Faults::from_env`. A binary built without the
/// feature does not read it; it is defined here, without the feature, for the tools that set it.
pub const FAULT_RATE_VARIABLE: &str = "QUEUE_WORKER_FAULT_RATE";

#[cfg(feature = "testing")]
impl WorkerSettings {
    /// The production processor with `faults` at the library's seams (the guard's store, the
    /// continuation send, the batch's queue actions): what [`run_worker`] runs in a binary built
    /// with the feature `testing` and started with [`FAULT_RATE_VARIABLE`], so that a chaos
    /// soak of any worker's real binary also fails the library's own calls.
    pub fn faulty_processor<W: Worker>(
        &self,
        worker: W,
        sdk: &SdkConfig,
        faults: std::sync::Arc<crate::testing::Faults>,
    ) -> FaultyLambdaProcessor<W> {
        use crate::testing::{FaultyJobs, FaultyQueue, FaultyStore};
        let (store, jobs, queue) = self.production_seams(sdk);
        self.processor_with(
            worker,
            FaultyStore {
                inner: store,
                faults: std::sync::Arc::clone(&faults),
            },
            FaultyJobs {
                inner: jobs,
                faults: std::sync::Arc::clone(&faults),
            },
            FaultyQueue {
                inner: queue,
                faults,
            },
        )
    }
}

/// The processor [`run_worker`] runs with faults ([`WorkerSettings::faulty_processor`]).
#[cfg(feature = "testing")]
pub type FaultyLambdaProcessor<W> = BatchProcessor<
    Idempotent<
        W,
        crate::testing::FaultyStore<DynamoDbStore>,
        crate::testing::FaultyJobs<Option<SqsJobQueue>>,
    >,
    crate::testing::FaultyQueue<SqsQueueActions>,
>;

/// The processor [`run_worker`] runs.
pub type LambdaProcessor<W> =
    BatchProcessor<Idempotent<W, DynamoDbStore, Option<SqsJobQueue>>, SqsQueueActions>;

/// What a worker's constructor gets at init.
#[derive(Debug, Clone, Copy)]
pub struct Init<'a> {
    /// The environment, to read the worker's own settings from (through [`Init::config`]).
    pub env: &'a Env,
    /// The SDK configuration, to build the worker's clients from (once: they are reused by
    /// every invocation of the execution environment). In the check-config mode it is built
    /// without loading anything, and its clients must send nothing at construction.
    pub sdk: &'a SdkConfig,
    /// The settings every worker shares, already read.
    pub settings: &'a WorkerSettings,
    /// Where [`Init::config`] describes what it read, in the check-config mode.
    described: Option<&'a RefCell<Vec<String>>>,
}

impl Init<'_> {
    /// Reads the worker's own settings with `read` (its `from_env`), so that the check-config
    /// mode reports them: read them this way, or the check cannot tell a repeated default.
    pub fn config<C: Debug>(
        &self,
        read: impl FnOnce(&Env) -> Result<C, ConfigError>,
    ) -> Result<C, ConfigError> {
        let config = read(self.env)?;
        if let Some(described) = self.described {
            described.borrow_mut().push(format!("{config:?}"));
        }
        Ok(config)
    }
}

/// Runs a queue worker in Lambda: reads the settings, builds the worker with `make` and the
/// production seams, and serves invocations until the environment is shut down. A bad setting
/// fails the init with an error naming the variable.
///
/// With `QUEUE_WORKER_CHECK_CONFIG=1` it reads and builds the same, prints the check's
/// [`Report`] and exits instead ([`crate::check`]).
///
/// **The event source mapping must enable `ReportBatchItemFailures`.**
pub async fn run_worker<W, F, E>(make: F) -> Result<(), lambda_runtime::Error>
where
    W: Worker,
    F: FnOnce(Init<'_>) -> Result<W, E>,
    E: Into<lambda_runtime::Error>,
{
    let env = Env::from_process();
    if check::requested(&env) {
        let env = env.recording();
        let outcome = start_worker(&env, make, Mode::Check).await;
        Report::of(&env, outcome.map(|started| started.described)).print_and_exit();
    }
    let started = start_worker(&env, make, Mode::Run).await?;
    #[cfg(feature = "testing")]
    if let Some(faults) = crate::testing::Faults::from_env(&env)? {
        crate::testing::install_process_faults(&faults);
        let processor = started
            .settings
            .faulty_processor(started.worker, &started.sdk, faults);
        return serve(&processor, &started.metrics).await;
    }
    let processor = started.settings.processor(started.worker, &started.sdk);
    serve(&processor, &started.metrics).await
}

/// Serves invocations with `processor` until the environment is shut down.
async fn serve<H: RecordHandler, Q: QueueActions>(
    processor: &BatchProcessor<H, Q>,
    metrics: &MetricsLine,
) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(lambda_runtime::service_fn(|event| {
        handle_batch(processor, metrics, event)
    }))
    .await
}

/// Whether a start serves invocations or only checks the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Install tracing, load the SDK configuration (the default chains), serve.
    Run,
    /// Install and load nothing, describe what was read.
    Check,
}

/// A worker ready to serve, and in the check-config mode the description of its configuration.
struct StartedWorker<W: Worker> {
    worker: W,
    settings: WorkerSettings,
    sdk: SdkConfig,
    metrics: MetricsLine,
    described: String,
}

/// The start of a worker, in either mode: the same reads in the same order.
async fn start_worker<W, F, E>(
    env: &Env,
    make: F,
    mode: Mode,
) -> Result<StartedWorker<W>, lambda_runtime::Error>
where
    W: Worker,
    F: FnOnce(Init<'_>) -> Result<W, E>,
    E: Into<lambda_runtime::Error>,
{
    let Started {
        config: settings,
        sdk,
        described,
    } = begin(env, mode, WorkerSettings::for_worker::<W>).await?;
    let worker_configs = RefCell::new(Vec::new());
    let worker = make(Init {
        env,
        sdk: &sdk,
        settings: &settings,
        described: (mode == Mode::Check).then_some(&worker_configs),
    })
    .map_err(Into::into)?;
    let metrics = MetricsLine {
        namespace: settings.metrics_namespace.clone(),
        function: env
            .get("AWS_LAMBDA_FUNCTION_NAME")
            .unwrap_or("unknown")
            .to_owned(),
    };
    let described = match described {
        Some(described) => format!(
            "{described}, worker: [{}], metrics: {metrics:?}",
            worker_configs.into_inner().join(", ")
        ),
        None => String::new(),
    };
    Ok(StartedWorker {
        worker,
        settings,
        sdk,
        metrics,
        described,
    })
}

/// What [`start`] hands a function's `main`: its configuration and the SDK configuration to
/// build its clients from (once).
#[derive(Debug)]
pub struct Started<C> {
    /// The function's own configuration.
    pub config: C,
    /// The SDK configuration.
    pub sdk: SdkConfig,
    /// What the check-config mode reports of the configuration.
    described: Option<String>,
}

/// Starts a Lambda function that is no queue worker (an HTTP API, say): installs tracing
/// ([`LogSettings`]), reads the function's configuration with `read` (its `from_env`), and loads
/// the SDK configuration ([`SdkSettings`]). A bad setting is an error naming the variable.
///
/// With `QUEUE_WORKER_CHECK_CONFIG=1` it reads the same, prints the check's [`Report`] and exits
/// instead ([`crate::check`]).
pub async fn start<C, E>(
    read: impl FnOnce(&Env) -> Result<C, E>,
) -> Result<Started<C>, lambda_runtime::Error>
where
    C: Debug,
    E: Into<lambda_runtime::Error>,
{
    let env = Env::from_process();
    if check::requested(&env) {
        let env = env.recording();
        let outcome = begin(&env, Mode::Check, read).await;
        Report::of(
            &env,
            outcome.map(|started| started.described.unwrap_or_default()),
        )
        .print_and_exit();
    }
    begin(&env, Mode::Run, read).await
}

/// The start every entry makes, in either mode: tracing's settings, the function's
/// configuration, the SDK's settings, in this order.
async fn begin<C, E>(
    env: &Env,
    mode: Mode,
    read: impl FnOnce(&Env) -> Result<C, E>,
) -> Result<Started<C>, lambda_runtime::Error>
where
    C: Debug,
    E: Into<lambda_runtime::Error>,
{
    let logs = LogSettings::from_env(env, "info");
    let logs = match mode {
        Mode::Run => {
            logs.install();
            None
        }
        Mode::Check => Some(logs),
    };
    let config = read(env).map_err(Into::into)?;
    let sdk = SdkSettings::from_env(env)?;
    Ok(match logs {
        None => Started {
            config,
            sdk: sdk.load().await,
            described: None,
        },
        Some(logs) => {
            let described = format!("logs: {logs:?}, sdk: {sdk:?}, config: {config:?}");
            Started {
                config,
                sdk: sdk.offline(),
                described: Some(described),
            }
        }
    })
}

/// Where an invocation's metrics line goes: its namespace and its `FunctionName` dimension,
/// read once at init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsLine {
    /// The namespace ([`WorkerSettings::metrics_namespace`]).
    pub namespace: String,
    /// The function's name (Lambda sets `AWS_LAMBDA_FUNCTION_NAME`).
    pub function: String,
}

/// Handles one invocation: processes the batch and prints its metrics lines. A
/// [`BatchError`](crate::batch::BatchError) fails the invocation.
pub async fn handle_batch<H: RecordHandler, Q: QueueActions>(
    processor: &BatchProcessor<H, Q>,
    metrics: &MetricsLine,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Error> {
    let (outcome, events) =
        counting(processor.process(&event.payload, event.context.deadline())).await;
    crate::trace::flush().await;
    let now = SystemTime::now();
    for line in lines(
        &metrics.namespace,
        &metrics.function,
        &outcome.summary,
        &events,
        oldest_message_age(&event.payload, now),
        now,
    ) {
        println!("{line}");
    }
    Ok(outcome.result?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Job;
    use crate::worker::{Done, Run};
    use crate::{batch::RecordError, idempotency::IdempotencyKey};

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(
            [
                ("IDEMPOTENCY_TABLE", "guard"),
                ("DEAD_LETTER_QUEUE_URL", "http://127.0.0.1/q/dlq"),
            ]
            .iter()
            .chain(pairs)
            .copied(),
        )
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Ping;

    impl Job for Ping {
        const SCHEMA_VERSION: u32 = 1;
        fn id(&self) -> String {
            "ping".into()
        }
        fn idempotency_key(&self) -> IdempotencyKey {
            IdempotencyKey::parse("ping").unwrap()
        }
    }

    struct Continuing;

    impl Worker for Continuing {
        type Job = Ping;
        const CONTINUES: bool = true;
        async fn run(&self, _: &Ping, _: &Run<'_>) -> Result<Done<Ping>, RecordError> {
            Ok(Done::processed())
        }
    }

    struct OneShot;

    impl Worker for OneShot {
        type Job = Ping;
        async fn run(&self, _: &Ping, _: &Run<'_>) -> Result<Done<Ping>, RecordError> {
            Ok(Done::processed())
        }
    }

    #[test]
    fn a_worker_that_never_continues_needs_no_job_queue() {
        let settings = WorkerSettings::for_worker::<OneShot>(&env(&[])).unwrap();
        assert_eq!(settings.job_queue_url, None);
        assert_eq!(settings.metrics_namespace, DEFAULT_NAMESPACE);
    }

    #[test]
    fn a_worker_that_continues_fails_at_init_without_its_job_queue() {
        assert_eq!(
            WorkerSettings::for_worker::<Continuing>(&env(&[])),
            Err(ConfigError::Missing {
                name: "JOB_QUEUE_URL".into()
            })
        );
        let settings = WorkerSettings::for_worker::<Continuing>(&env(&[
            ("JOB_QUEUE_URL", "http://127.0.0.1/q/jobs"),
            ("METRICS_NAMESPACE", "Billing"),
        ]))
        .unwrap();
        assert_eq!(
            settings.job_queue_url.as_deref(),
            Some("http://127.0.0.1/q/jobs")
        );
        assert_eq!(settings.metrics_namespace, "Billing");
    }

    /// A worker constructor reading one setting of its own, `OWN_LIMIT`.
    fn with_own_limit(init: Init<'_>) -> Result<OneShot, ConfigError> {
        let limit: u64 = init.config(|env| env.positive_or("OWN_LIMIT", 5))?;
        assert!(limit > 0);
        Ok(OneShot)
    }

    #[tokio::test]
    async fn the_check_reads_the_whole_configuration_and_describes_it() {
        let set = env(&[("OWN_LIMIT", "7"), ("SDK_CONNECT_TIMEOUT_MS", "900")]).recording();
        let started = start_worker(&set, with_own_limit, Mode::Check)
            .await
            .unwrap();
        let read = set.looked_up();
        for name in [
            "OWN_LIMIT",
            "IDEMPOTENCY_TABLE",
            "BATCH_CONCURRENCY",
            "JOB_QUEUE_URL",
            "RUST_LOG",
            "AWS_CA_BUNDLE",
            "SDK_CONNECT_TIMEOUT_MS",
            "AWS_LAMBDA_FUNCTION_NAME",
        ] {
            assert!(read.iter().any(|r| r == name), "{name} not in {read:?}");
        }
        let described = started.described;
        for part in [
            "logs: LogSettings {",
            "connect: 900ms",
            "table_name: \"guard\"",
            "worker: [7]",
            "function: \"unknown\"",
        ] {
            assert!(described.contains(part), "{part} not in {described}");
        }
        let defaults = env(&[]).recording();
        let started = start_worker(&defaults, with_own_limit, Mode::Check)
            .await
            .unwrap();
        assert!(started.described.contains("worker: [5]"));
        assert!(started.described.contains("connect: 2s"));
    }

    #[tokio::test]
    async fn the_check_fails_on_a_value_the_worker_or_the_library_refuses() {
        for (name, value) in [("OWN_LIMIT", "0"), ("SDK_ATTEMPT_TIMEOUT_MS", "soon")] {
            let env = env(&[(name, value)]).recording();
            let error = start_worker(&env, with_own_limit, Mode::Check)
                .await
                .err()
                .expect("a refused value fails the check");
            assert!(
                error.to_string().contains(&format!("{name}=\"{value}\"")),
                "{error}"
            );
        }
    }

    #[tokio::test]
    async fn the_check_of_a_function_that_is_no_worker_describes_its_configuration() {
        let env = Env::from_pairs([("OWN_LIMIT", "3")]).recording();
        let started = begin(&env, Mode::Check, |env| env.positive_or("OWN_LIMIT", 5))
            .await
            .unwrap();
        assert_eq!(started.config, 3);
        let described = started.described.unwrap();
        assert!(described.ends_with("config: 3"), "{described}");
        assert!(described.contains("SdkTimeouts"), "{described}");
        assert!(env.looked_up().iter().any(|name| name == "OWN_LIMIT"));
    }
}
