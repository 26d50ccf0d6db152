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

use std::time::SystemTime;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::LambdaEvent;

use crate::batch::{BatchProcessor, BatchSettings, QueueActions, RecordHandler, SqsQueueActions};
use crate::config::{ConfigError, Env, GuardConfig};
use crate::idempotency::{DynamoDbStore, GuardSettings, IdempotencyGuard, IdempotencyStore};
use crate::job::{JobQueue, SqsJobQueue};
use crate::metrics::{DEFAULT_NAMESPACE, emf, oldest_message_age};
use crate::worker::{Idempotent, Worker};

/// What every worker is configured with, read once at init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSettings {
    /// The idempotency guard ([`GuardConfig::VARIABLES`]).
    pub guard: GuardConfig,
    /// How batches are processed ([`BatchSettings::VARIABLES`]).
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
    /// The variables this struct reads itself (see also [`GuardConfig::VARIABLES`] and
    /// [`BatchSettings::VARIABLES`], and [`all_variables`](Self::all_variables)).
    pub const VARIABLES: &'static [&'static str] = &[
        "DEAD_LETTER_QUEUE_URL",
        "JOB_QUEUE_URL",
        "METRICS_NAMESPACE",
    ];

    /// Every variable the settings read, their parts' included.
    pub fn all_variables() -> impl Iterator<Item = &'static str> {
        [
            Self::VARIABLES,
            GuardConfig::VARIABLES,
            BatchSettings::VARIABLES,
        ]
        .into_iter()
        .flatten()
        .copied()
    }

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
        self.processor_with(
            worker,
            DynamoDbStore::new(aws_sdk_dynamodb::Client::new(sdk), &self.guard.table_name),
            self.job_queue_url
                .as_deref()
                .map(|url| SqsJobQueue::on_first_send(sdk, url)),
            SqsQueueActions::on_first_failure(sdk, &self.dead_letter_queue_url),
        )
    }
}

/// The processor [`run_worker`] runs.
pub type LambdaProcessor<W> =
    BatchProcessor<Idempotent<W, DynamoDbStore, Option<SqsJobQueue>>, SqsQueueActions>;

/// What a worker's constructor gets at init.
#[derive(Debug, Clone, Copy)]
pub struct Init<'a> {
    /// The environment, to read the worker's own settings from.
    pub env: &'a Env,
    /// The SDK configuration, to build the worker's clients from (once: they are reused by
    /// every invocation of the execution environment).
    pub sdk: &'a SdkConfig,
    /// The settings every worker shares, already read.
    pub settings: &'a WorkerSettings,
}

/// Runs a queue worker in Lambda: reads the settings, builds the worker with `make` and the
/// production seams, and serves invocations until the environment is shut down. A bad setting
/// fails the init with an error naming the variable.
///
/// **The event source mapping must enable `ReportBatchItemFailures`.**
pub async fn run_worker<W, F, E>(make: F) -> Result<(), lambda_runtime::Error>
where
    W: Worker,
    F: FnOnce(Init<'_>) -> Result<W, E>,
    E: Into<lambda_runtime::Error>,
{
    crate::telemetry::init();
    let env = Env::from_process();
    let settings = WorkerSettings::for_worker::<W>(&env)?;
    let sdk = crate::aws::load_sdk_config(&env).await?;
    let worker = make(Init {
        env: &env,
        sdk: &sdk,
        settings: &settings,
    })
    .map_err(Into::into)?;
    let processor = settings.processor(worker, &sdk);
    let metrics = MetricsLine {
        namespace: settings.metrics_namespace.clone(),
        function: env
            .get("AWS_LAMBDA_FUNCTION_NAME")
            .unwrap_or("unknown")
            .to_owned(),
    };
    lambda_runtime::run(lambda_runtime::service_fn(|event| {
        handle_batch(&processor, &metrics, event)
    }))
    .await
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

/// Handles one invocation: processes the batch and prints its metrics line. A
/// [`BatchError`](crate::batch::BatchError) fails the invocation.
pub async fn handle_batch<H: RecordHandler, Q: QueueActions>(
    processor: &BatchProcessor<H, Q>,
    metrics: &MetricsLine,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Error> {
    let outcome = processor
        .process(&event.payload, event.context.deadline())
        .await;
    let now = SystemTime::now();
    let line = emf(
        &metrics.namespace,
        &metrics.function,
        &outcome.summary,
        oldest_message_age(&event.payload, now),
        now,
    );
    println!("{line}");
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

    #[test]
    fn every_variable_read_is_listed() {
        let listed: Vec<&str> = WorkerSettings::all_variables().collect();
        for name in [
            "IDEMPOTENCY_TABLE",
            "BATCH_CONCURRENCY",
            "DEAD_LETTER_QUEUE_URL",
            "JOB_QUEUE_URL",
            "METRICS_NAMESPACE",
        ] {
            assert!(listed.contains(&name), "{name} is listed");
        }
    }
}
