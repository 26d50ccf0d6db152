//! The real notifier, hosted: `NotifierFunction` of `template.yaml` provisioned and run as
//! processes of its own binary behind its queue's mapping (`local_runner::host`), its
//! `PARTNER_URL` pointing at a [`FakePartner`] on 127.0.0.1.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_sqs::types::QueueAttributeName;
use local_runner::esm::{Disposition, InvocationReport, MappingChaos};
use local_runner::host::{HostChaos, ServeOptions, Serving};
use local_runner::provision::{local_clients, mapping_settings};
use local_runner::template::Template;
use notifier::store::DynamoDbNotifications;
use queue_worker::job::SqsJobQueue;
use tokio::sync::mpsc;

use crate::partner::{FakePartner, PartnerBehaviour};

/// The function hosted, and the resources it uses, by their logical ids in `template.yaml`.
pub const FUNCTION: &str = "NotifierFunction";
const TABLE: &str = "NotificationsTable";
const QUEUE: &str = "NotifierQueue";
const DEAD_LETTER_QUEUE: &str = "NotifierDeadLetterQueue";

/// How to host it.
#[derive(Debug, Clone, Default)]
pub struct HostSettings {
    /// Prefix of the local resource names.
    pub stack: String,
    /// The cargo profile the binary is built with (`dev` when empty).
    pub profile: String,
    /// Overrides the mapping's `MaximumConcurrency`.
    pub maximum_concurrency: Option<usize>,
    /// Overrides the function's timeout.
    pub function_timeout: Option<Duration>,
    /// Variables set over the template's, besides `PARTNER_URL`.
    pub environment: Vec<(String, String)>,
    /// Where the notifier's processes write their logs and metric lines; `None` leaves them on
    /// this process's stdout and stderr.
    pub function_log: Option<std::path::PathBuf>,
    /// The fake partner.
    pub partner: PartnerBehaviour,
    /// Share of invocations whose process is killed during the invocation.
    pub kill_rate: f64,
    /// A kill comes within this long after the process took the invocation.
    pub kill_within: Duration,
    /// Share of received messages also handed to a second, concurrent invocation.
    pub duplicate_rate: f64,
    /// Share of the library's own calls that fail in the binary (`HostChaos::seam_fault_rate`).
    pub seam_fault_rate: f64,
    /// Visibility timeout of each receive, overriding the queue's: a failed batch comes back
    /// after it.
    pub visibility_timeout: Option<Duration>,
}

/// Invocations seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Invocations {
    /// Every invocation.
    pub total: u64,
    /// Failed as a whole (an error, a crash, a kill, a time-out): the batch comes back.
    pub failed: u64,
    /// Ran past the function's timeout.
    pub timed_out: u64,
}

/// The hosted notifier, its fake partner and clients for its resources.
pub struct Hosted {
    /// The fake partner the notifier calls.
    pub partner: FakePartner,
    /// The notifications table, as a sender sees it.
    pub store: DynamoDbNotifications,
    /// The notifier's queue, as a sender sees it.
    pub jobs: SqsJobQueue,
    /// The notifications table's name.
    pub table_name: String,
    /// The notifier's queue.
    pub queue_url: String,
    /// Its dead-letter queue.
    pub dead_letter_queue_url: String,
    /// The mapping's maximum concurrency.
    pub maximum_concurrency: usize,
    /// The function's timeout.
    pub function_timeout: Duration,
    sqs: aws_sdk_sqs::Client,
    serving: Option<Serving>,
    reports: mpsc::UnboundedReceiver<(String, InvocationReport)>,
    invocations: Invocations,
    killed: Arc<AtomicU64>,
    duplicated: Arc<AtomicU64>,
    function_log: Option<std::path::PathBuf>,
}

impl Hosted {
    /// Starts the fake partner, provisions `template` under `settings.stack`, builds the
    /// notifier's binary and starts its mapping.
    pub async fn start(
        template: &Template,
        workspace: &Path,
        settings: &HostSettings,
    ) -> anyhow::Result<Self> {
        let partner = FakePartner::start(settings.partner.clone())
            .await
            .context("starting the fake partner")?;
        let mut environment = vec![("PARTNER_URL".to_owned(), partner.url())];
        environment.extend(settings.environment.iter().cloned());
        let host_chaos = HostChaos {
            kill_rate: settings.kill_rate,
            kill_within: settings.kill_within,
            killed: Arc::default(),
            seam_fault_rate: settings.seam_fault_rate,
        };
        let mapping_chaos = MappingChaos {
            duplicate_rate: settings.duplicate_rate,
            visibility_timeout: settings.visibility_timeout,
            duplicated: Arc::default(),
        };
        let (reports, received) = mpsc::unbounded_channel();
        let options = ServeOptions {
            functions: vec![FUNCTION.to_owned()],
            profile: settings.profile.clone(),
            maximum_concurrency: settings.maximum_concurrency,
            function_timeout: settings.function_timeout,
            environment,
            function_log: settings.function_log.clone(),
            mapping_chaos: mapping_chaos.clone(),
            host_chaos: host_chaos.clone(),
            reports: Some(reports),
        };
        let serving = Serving::start(template, workspace, &settings.stack, &options).await?;
        let (_, mapping) = mapping_settings(template, FUNCTION)?;
        let (_, clients) = local_clients().await?;
        let resource = |logical_id: &str| {
            serving
                .resources
                .reference(logical_id)
                .map(str::to_owned)
                .with_context(|| format!("{logical_id} was not provisioned"))
        };
        let table_name = resource(TABLE)?;
        let queue_url = resource(QUEUE)?;
        let dead_letter_queue_url = resource(DEAD_LETTER_QUEUE)?;
        Ok(Self {
            partner,
            store: DynamoDbNotifications::new(clients.dynamodb.clone(), &table_name),
            jobs: SqsJobQueue::new(clients.sqs.clone(), &queue_url),
            table_name,
            queue_url,
            dead_letter_queue_url,
            maximum_concurrency: settings
                .maximum_concurrency
                .unwrap_or(mapping.maximum_concurrency),
            function_timeout: settings
                .function_timeout
                .unwrap_or(mapping.function_timeout),
            sqs: clients.sqs,
            serving: Some(serving),
            reports: received,
            invocations: Invocations::default(),
            killed: host_chaos.killed,
            duplicated: mapping_chaos.duplicated,
            function_log: settings.function_log.clone(),
        })
    }

    /// Messages on the notifier's queue: visible, in flight or held back for a retry.
    pub async fn queue_depth(&self) -> anyhow::Result<u64> {
        depth(&self.sqs, &self.queue_url).await
    }

    /// Invocations so far.
    pub fn invocations(&mut self) -> Invocations {
        while let Ok((_, report)) = self.reports.try_recv() {
            self.invocations.total += 1;
            if matches!(report.disposition, Disposition::FailBatch(_)) {
                self.invocations.failed += 1;
            }
            if report.timed_out {
                self.invocations.timed_out += 1;
            }
        }
        self.invocations
    }

    /// Processes killed by the chaos knob so far.
    pub fn kills(&self) -> u64 {
        self.killed.load(Ordering::Relaxed)
    }

    /// Faults injected at the library's seams so far, by seam (counted in the function log;
    /// none without one).
    pub fn seam_faults(&self) -> BTreeMap<String, u64> {
        self.function_log
            .as_deref()
            .map(local_runner::host::seam_faults)
            .unwrap_or_default()
    }

    /// Messages handed to a second, concurrent invocation so far.
    pub fn duplicate_deliveries(&self) -> u64 {
        self.duplicated.load(Ordering::Relaxed)
    }

    /// Stops the mapping after its invocations in flight and kills the processes; the partner
    /// and the clients stay, to check what happened.
    pub async fn stop(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.stop().await;
        }
    }

    /// Takes every message off the dead-letter queue: each notification's id (if the body names
    /// one) and its class (`dlq.error_class`, or `max_receive_count` when SQS moved it there
    /// after too many receives, without a reason).
    pub async fn take_parked(&self) -> anyhow::Result<Vec<(Option<String>, String)>> {
        let mut parked = Vec::new();
        let mut empty_receives = 0;
        while empty_receives < 2 {
            let received = self
                .sqs
                .receive_message()
                .queue_url(&self.dead_letter_queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .visibility_timeout(300)
                .message_attribute_names("All")
                .send()
                .await
                .context("reading the dead-letter queue")?;
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() {
                empty_receives += 1;
            }
            for message in messages {
                let id = message
                    .body()
                    .and_then(|body| serde_json::from_str::<serde_json::Value>(body).ok())
                    .and_then(|body| body["notificationId"].as_str().map(str::to_owned));
                let class = message
                    .message_attributes()
                    .and_then(|attributes| {
                        attributes.get(queue_worker::batch::dlq_attributes::ERROR_CLASS)
                    })
                    .and_then(|value| value.string_value())
                    .unwrap_or("max_receive_count")
                    .to_owned();
                parked.push((id, class));
            }
        }
        Ok(parked)
    }
}

async fn depth(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> anyhow::Result<u64> {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .context("reading the queue's depth")?
        .attributes
        .unwrap_or_default();
    Ok(attributes
        .values()
        .filter_map(|count| count.parse::<u64>().ok())
        .sum())
}
