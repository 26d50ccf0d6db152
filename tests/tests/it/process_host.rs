//! The process host against the emulator: a function of a template, built by cargo and run as
//! processes under local Runtime APIs, behind the emulated event source mapping.
//!
//! Needs an endpoint: `eval "$(infra/emulator/emulator.sh env)"`. Each test provisions the
//! fixture template under a name of its own.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::QueueAttributeName;
use local_runner::esm::{Disposition, EventSourceMapping, InvocationReport};
use local_runner::host::{self, FunctionConfig, HostChaos, ProcessHost, Target};
use local_runner::provision::{mapping_settings, provision};
use local_runner::template::Template;
use tokio::sync::{mpsc, oneshot};

/// How long to wait for anything before the test fails: only a broken host takes this long.
const PATIENCE: Duration = Duration::from_secs(120);

/// One function of the fixture template, hosted behind its mapping.
struct Hosted {
    host: ProcessHost,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    reports: mpsc::UnboundedReceiver<InvocationReport>,
    _stop: oneshot::Sender<()>,
}

impl Hosted {
    async fn start(function: &str) -> Self {
        Self::start_with(function, HostChaos::default()).await
    }

    async fn start_with(function: &str, chaos: HostChaos) -> Self {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let template = Template::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../infra/local-runner/tests/fixtures/template.yaml"
        ))
        .unwrap();
        let (_, clients) = local_runner::provision::local_clients()
            .await
            .expect("a local endpoint: eval \"$(infra/emulator/emulator.sh env)\"");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let stack = format!("host-{}-{nanos}", std::process::id());
        let resources = provision(&template, &stack, &clients).await.unwrap();
        let binary = host::binary_name(&template, function).unwrap();
        let binary = host::build(&workspace, Target::Example(binary), "dev", &[])
            .await
            .unwrap();
        let config =
            FunctionConfig::from_template(&template, &resources, &stack, function, binary).unwrap();
        let host = ProcessHost::new(config).with_chaos(chaos);
        let (queue, settings) = mapping_settings(&template, function).unwrap();
        let queue_url = resources.reference(&queue).unwrap().to_owned();
        let mapping = EventSourceMapping::new(
            clients.sqs.clone(),
            queue_url.clone(),
            resources.arn(&queue).unwrap(),
            settings,
            host.clone(),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let (reports, received) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            std::sync::Arc::new(mapping)
                .run(
                    async {
                        let _ = stopped.await;
                    },
                    reports,
                )
                .await;
        });
        Self {
            host,
            sqs: clients.sqs,
            queue_url,
            reports: received,
            _stop: stop,
        }
    }

    async fn send(&self, body: &str) {
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    /// The next invocation's report.
    async fn report(&mut self) -> InvocationReport {
        tokio::time::timeout(PATIENCE, self.reports.recv())
            .await
            .expect("an invocation in time")
            .expect("the mapping is running")
    }

    /// Reports until one acknowledged a message; returns those before it.
    async fn until_acknowledged(&mut self) -> Vec<InvocationReport> {
        let mut before = Vec::new();
        loop {
            let report = self.report().await;
            if report.acknowledged > 0 {
                return before;
            }
            before.push(report);
        }
    }

    /// Messages on the queue, visible or in flight.
    async fn messages(&self) -> u64 {
        let attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        attributes
            .values()
            .map(|count| count.parse::<u64>().unwrap())
            .sum()
    }
}

fn failed_because(report: &InvocationReport) -> &str {
    match &report.disposition {
        Disposition::FailBatch(reason) => reason,
        other => panic!("expected the whole batch to fail, got {other:?}"),
    }
}

#[tokio::test]
async fn messages_are_processed_by_one_reused_process_and_deleted() {
    let mut hosted = Hosted::start("WorkerFunction").await;

    for body in ["one", "two", "three"] {
        hosted.send(body).await;
        let failed = hosted.until_acknowledged().await;
        assert!(failed.is_empty(), "{failed:?}");
    }

    assert_eq!(hosted.host.environments_started(), 1);
    let waited = tokio::time::Instant::now();
    while hosted.messages().await > 0 {
        assert!(waited.elapsed() < PATIENCE, "the messages were not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_process_past_its_timeout_is_killed_replaced_and_its_batch_comes_back() {
    let mut hosted = Hosted::start("WorkerFunction").await;
    hosted.send("sleep").await;

    let first = hosted.report().await;
    assert!(first.timed_out, "{first:?}");
    assert_eq!(first.acknowledged, 0);

    hosted.send("after").await;
    let failed = hosted.until_acknowledged().await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(hosted.host.environments_started(), 2);
    // The batch comes back after its visibility timeout, and times out again.
    let again = hosted.report().await;
    assert!(again.timed_out, "{again:?}");
}

#[tokio::test]
async fn a_process_that_crashes_fails_its_batch_and_is_replaced() {
    let mut hosted = Hosted::start("WorkerFunction").await;
    hosted.send("crash").await;

    let crashed = hosted.report().await;
    assert!(!crashed.timed_out);
    assert_eq!(crashed.acknowledged, 0);
    assert!(
        failed_because(&crashed).contains("process exited"),
        "{crashed:?}"
    );

    hosted.send("after").await;
    hosted.until_acknowledged().await;
    assert!(hosted.host.environments_started() >= 2);
}

#[tokio::test]
async fn chaos_kills_a_process_during_its_invocation_and_its_batch_fails() {
    let chaos = HostChaos {
        kill_rate: 1.0,
        kill_within: Duration::from_millis(300),
        ..HostChaos::default()
    };
    let mut hosted = Hosted::start_with("WorkerFunction", chaos.clone()).await;
    // It would sleep past its timeout: only the kill ends it sooner.
    hosted.send("sleep").await;

    let killed = hosted.report().await;

    assert!(!killed.timed_out, "{killed:?}");
    assert_eq!(killed.acknowledged, 0);
    assert!(
        failed_because(&killed).contains("process exited"),
        "{killed:?}"
    );
    assert_eq!(chaos.killed.load(Ordering::Relaxed), 1);
    assert_eq!(hosted.host.environments_started(), 1);
}

#[tokio::test]
async fn an_error_the_function_reports_fails_its_batch_and_keeps_the_process() {
    let mut hosted = Hosted::start("WorkerFunction").await;
    hosted.send("error").await;

    let failed = hosted.report().await;
    assert!(
        failed_because(&failed).contains("asked to fail"),
        "{failed:?}"
    );
    assert_eq!(hosted.host.environments_started(), 1);
}

#[tokio::test]
async fn a_failed_init_fails_the_batch_and_says_so() {
    let mut hosted = Hosted::start("BrokenInitFunction").await;
    hosted.send("hello").await;

    let failed = hosted.report().await;

    assert!(
        failed_because(&failed).contains("init failed"),
        "{failed:?}"
    );
}

#[test]
fn every_sqs_triggered_function_of_a_template_is_found() {
    let template = Template::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/local-runner/tests/fixtures/template.yaml"
    ))
    .unwrap();
    assert_eq!(
        host::sqs_triggered_functions(&template),
        ["WorkerFunction", "BrokenInitFunction"]
    );
}
