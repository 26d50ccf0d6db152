//! The whole pipeline in one process: provisioned resources, the producer's router served over
//! HTTP on 127.0.0.1, and the processor behind the emulated event source mapping.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use aws_lambda_events::event::sqs::SqsEvent;
use import_processor::{Parts, ProcessorConfig};
use import_producer::{ProducerConfig, production_api, router};
use imports::ImportJob;
use queue_worker::Env;
use queue_worker::batch::{
    BatchProcessor, BatchSummary, QueueActions, RecordHandler, RecordStatus,
};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::flaky::FlakyWriter;
use local_runner::esm::{EventSourceMapping, Function, InvocationReport, MappingChaos};
use local_runner::provision::{Clients, Provisioned, local_clients, mapping_settings, provision};
use local_runner::template::Template;

/// What a queue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueDepth {
    /// Visible messages.
    pub waiting: u64,
    /// Messages sent with a delay that has not passed yet.
    pub delayed: u64,
    /// Messages received and not yet deleted or made visible again.
    pub in_flight: u64,
}

impl QueueDepth {
    /// Whether the queue holds no message at all.
    pub fn is_empty(&self) -> bool {
        self.waiting == 0 && self.delayed == 0 && self.in_flight == 0
    }
}

/// Running counts of what the processor did, across invocations.
#[derive(Debug, Default)]
pub struct Stats {
    counts: [AtomicU64; RecordStatus::ALL.len()],
    invocations: AtomicU64,
    failed_invocations: AtomicU64,
    timed_out_invocations: AtomicU64,
    faults_injected: Arc<AtomicU64>,
    /// The continuation jobs delivered, as `(import id, chunk)`: each is one chunk that ran
    /// out of time and continued, however often its job was delivered; `true` if that chunk
    /// stalled (continued with no progress).
    continuations: Mutex<HashMap<(String, u32), bool>>,
}

impl Stats {
    /// Records processed with `status` so far.
    pub fn count(&self, status: RecordStatus) -> u64 {
        let index = RecordStatus::ALL
            .iter()
            .position(|s| *s == status)
            .unwrap_or(0);
        self.counts[index].load(Ordering::Relaxed)
    }

    /// Invocations so far, and how many of them failed as a whole.
    pub fn invocations(&self) -> (u64, u64) {
        (
            self.invocations.load(Ordering::Relaxed),
            self.failed_invocations.load(Ordering::Relaxed),
        )
    }

    /// Invocations that ran past the function timeout so far. The processor stops starting
    /// work `BATCH_DEADLINE_MARGIN_MS` before its deadline so that this stays 0; such an
    /// invocation's function never returned, so it is not among [`invocations`](Self::invocations).
    pub fn timed_out_invocations(&self) -> u64 {
        self.timed_out_invocations.load(Ordering::Relaxed)
    }

    /// Writes the flaky-downstream mode failed on purpose so far.
    pub fn faults_injected(&self) -> u64 {
        self.faults_injected.load(Ordering::Relaxed)
    }

    /// Chunks that ran out of time and continued in a new job, so far. A processed record is
    /// one chunk: its import is done only if it did not continue.
    pub fn continuations(&self) -> u64 {
        self.continuations
            .lock()
            .map_or(0, |seen| seen.len() as u64)
    }

    /// Of the [`continuations`](Self::continuations), those after a chunk that wrote nothing in
    /// its work time (a stall, held back instead of retried).
    pub fn stalls(&self) -> u64 {
        self.continuations.lock().map_or(0, |seen| {
            seen.values().filter(|stalled| **stalled).count() as u64
        })
    }

    /// Notes the continuation jobs among `event`'s records.
    fn observe(&self, event: &SqsEvent) {
        let continued = event
            .records
            .iter()
            .filter_map(|record| serde_json::from_str::<ImportJob>(record.body.as_deref()?).ok())
            .filter_map(|job| {
                let stalled = job.resume.as_ref()?.stalls > 0;
                Some(((job.import_id.to_string(), job.chunk()), stalled))
            });
        if let Ok(mut seen) = self.continuations.lock() {
            seen.extend(continued);
        }
    }

    fn add(&self, summary: &BatchSummary, failed: bool) {
        for (i, status) in RecordStatus::ALL.iter().enumerate() {
            self.counts[i].fetch_add(summary.count(*status) as u64, Ordering::Relaxed);
        }
        self.invocations.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failed_invocations.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The production processor (its item writer behind the fault injector) as the emulated
/// mapping's function.
pub(crate) struct Processor<H, Q> {
    inner: Arc<BatchProcessor<H, Q>>,
    stats: Arc<Stats>,
}

impl<H, Q> Processor<H, Q> {
    /// `inner`, counting what it does in `stats`.
    pub(crate) fn new(inner: Arc<BatchProcessor<H, Q>>, stats: Arc<Stats>) -> Self {
        Self { inner, stats }
    }
}

impl<H: RecordHandler + 'static, Q: QueueActions + 'static> Function for Processor<H, Q> {
    async fn invoke(&self, event: SqsEvent, deadline: SystemTime) -> Result<Value, String> {
        self.stats.observe(&event);
        let outcome = self.inner.process(&event, deadline).await;
        self.stats.add(&outcome.summary, outcome.result.is_err());
        match outcome.result {
            Ok(response) => serde_json::to_value(response).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        }
    }
}

/// How to run the local pipeline.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Port of the API on 127.0.0.1 (0 picks a free one).
    pub port: u16,
    /// Overrides the template's `MaximumConcurrency` of the event source mapping.
    pub maximum_concurrency: Option<usize>,
    /// Overrides the processor's function timeout from the template.
    pub function_timeout: Option<Duration>,
    /// Share of item writes (0.0 to 1.0) that fail as if the table were throttling.
    pub downstream_failure_rate: f64,
    /// Chaos mode (`make chaos`): every seam behind a fault injector, kills, duplicate
    /// deliveries and a capacity-limited items downstream.
    pub chaos: Option<Arc<crate::chaos::Chaos>>,
}

/// A running local pipeline. Dropping it does not stop it: call [`Pipeline::stop`].
pub struct Pipeline {
    /// Base URL of the API, e.g. `http://127.0.0.1:8080`.
    pub base_url: String,
    /// The local resources.
    pub resources: Provisioned,
    /// The clients on the local endpoint.
    pub clients: Clients,
    /// What the processor did so far.
    pub stats: Arc<Stats>,
    /// The event source mapping's maximum concurrency in effect.
    pub maximum_concurrency: usize,
    /// The processor's function timeout in effect.
    pub function_timeout: Duration,
    stop_mapping: oneshot::Sender<()>,
    mapping: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Pipeline {
    /// Provisions `template` under the name prefix `stack` and starts the API and the
    /// processor's event source mapping as `options` say.
    pub async fn start(
        template: &Template,
        stack: &str,
        options: &Options,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&options.downstream_failure_rate),
            "the downstream failure rate must be between 0 and 1, not {}",
            options.downstream_failure_rate
        );
        let port = options.port;
        let (sdk, clients) = local_clients().await?;
        let resources = provision(template, stack, &clients)
            .await
            .context("provisioning the local resources from template.yaml")?;

        let producer_env = Env::from_pairs(resources.function_env(template, "ProducerFunction")?);
        let api = production_api(ProducerConfig::from_env(&producer_env)?, &sdk);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("binding 127.0.0.1:{port}"))?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let app = router(Arc::new(api));
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the API server stopped");
            }
        });

        let processor_env = Env::from_pairs(resources.function_env(template, "ProcessorFunction")?);
        let config = ProcessorConfig::from_env(&processor_env)?;
        let stats = Arc::new(Stats::default());
        let (queue, mut settings) = mapping_settings(template, "ProcessorFunction")?;
        if let Some(maximum) = options.maximum_concurrency {
            settings.maximum_concurrency = maximum;
        }
        if let Some(timeout) = options.function_timeout {
            settings.function_timeout = timeout;
        }
        let (maximum_concurrency, function_timeout) =
            (settings.maximum_concurrency, settings.function_timeout);
        let queue_url = resources
            .reference(&queue)
            .context("the job queue")?
            .to_owned();
        let queue_arn = resources
            .arn(&queue)
            .context("the job queue's ARN")?
            .to_owned();
        let (stop_mapping, mapping) = if let Some(chaos) = &options.chaos {
            let function =
                crate::chaos::function(&config, &sdk, chaos, &stats, settings.function_timeout);
            let mapping = EventSourceMapping::new(
                clients.sqs.clone(),
                queue_url,
                queue_arn,
                settings,
                function,
            )
            .with_chaos(MappingChaos {
                duplicate_rate: chaos.knobs.duplicate_rate,
                visibility_timeout: Some(chaos.knobs.visibility_timeout),
                duplicated: Arc::clone(&chaos.duplicated),
            });
            launch(mapping, &stats)
        } else {
            let (rate, injected) = (
                options.downstream_failure_rate,
                Arc::clone(&stats.faults_injected),
            );
            let Parts {
                guard,
                source,
                writer,
                imports,
                jobs,
                queue,
                config,
            } = Parts::new(&config, &sdk);
            let writer = FlakyWriter::new(writer, rate, injected);
            let processor = Parts {
                guard,
                source,
                writer,
                imports,
                jobs,
                queue,
                config,
            }
            .build();
            let function = Processor::new(Arc::new(processor), Arc::clone(&stats));
            let mapping = EventSourceMapping::new(
                clients.sqs.clone(),
                queue_url,
                queue_arn,
                settings,
                function,
            );
            launch(mapping, &stats)
        };
        Ok(Self {
            base_url,
            resources,
            clients,
            stats,
            maximum_concurrency,
            function_timeout,
            stop_mapping,
            mapping,
            server,
        })
    }
    /// Messages on the queue `logical_id`: waiting, held back (a delayed send) and in flight.
    pub async fn queue_depth(&self, logical_id: &str) -> anyhow::Result<QueueDepth> {
        use aws_sdk_sqs::types::QueueAttributeName as Name;
        let url = self.resources.reference(logical_id).context("queue")?;
        let attributes = self
            .clients
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(Name::ApproximateNumberOfMessages)
            .attribute_names(Name::ApproximateNumberOfMessagesDelayed)
            .attribute_names(Name::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await?
            .attributes
            .unwrap_or_default();
        let read = |name: &Name| {
            attributes
                .get(name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            waiting: read(&Name::ApproximateNumberOfMessages),
            delayed: read(&Name::ApproximateNumberOfMessagesDelayed),
            in_flight: read(&Name::ApproximateNumberOfMessagesNotVisible),
        })
    }

    /// Stops the mapping (waiting for invocations in flight) and the server, and sends the
    /// spans that ended since the last export, when spans are exported.
    pub async fn stop(self) {
        let _ = self.stop_mapping.send(());
        let _ = self.mapping.await;
        self.server.abort();
        queue_worker::trace::flush().await;
    }
}

/// Runs `mapping` in a task until the returned sender fires, counting timed-out invocations.
fn launch<F: Function>(
    mapping: EventSourceMapping<F>,
    stats: &Arc<Stats>,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let mapping = Arc::new(mapping);
    let (stop_mapping, stopped) = oneshot::channel::<()>();
    let (reports, mut report_rx) = mpsc::unbounded_channel::<InvocationReport>();
    let observed = Arc::clone(stats);
    let mapping = tokio::spawn(async move {
        let drain = tokio::spawn(async move {
            while let Some(report) = report_rx.recv().await {
                if report.timed_out {
                    observed
                        .timed_out_invocations
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        mapping
            .run(
                async {
                    let _ = stopped.await;
                },
                reports,
            )
            .await;
        let _ = drain.await;
    });
    (stop_mapping, mapping)
}
