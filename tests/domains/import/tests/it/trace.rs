//! One job's trace from a real run: the local pipeline (the producer over HTTP, the processor
//! behind the emulated mapping) exports its spans to the local runner's collector, and an
//! import's tree holds its request and the records that ran its job.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use harness::unique_name;
use import_tests::demo::{self, Burst};
use import_tests::pipeline::{Options, Pipeline};
use local_runner::template::Template;
use local_runner::traces::{self, Collector, JobTree};
use queue_worker::trace::TraceSettings;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;

/// The test binary's one global subscriber: the trace layer `telemetry::init` installs, at
/// `info`, exporting to a collector that appends to the returned file. A default set for one
/// thread is not enough while other tests run the same call sites on theirs (tracing caches a
/// call site's interest across threads). The collector and the exporter's requests run on a
/// runtime of their own, which outlives each test's.
pub(crate) fn collected_spans() -> &'static Path {
    static COLLECTING: OnceLock<(tokio::runtime::Runtime, Collector, PathBuf)> = OnceLock::new();
    let (_, _, file) = COLLECTING.get_or_init(|| {
        // Built on a thread of its own: a test's runtime cannot block on another.
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let file = std::env::temp_dir().join(format!("{}-spans.jsonl", unique_name("trace")));
            let collector = runtime.block_on(Collector::start(&file)).unwrap();
            let settings = TraceSettings {
                otlp_endpoint: Some(format!("{}/v1/traces", collector.endpoint())),
            };
            let layer = runtime.block_on(async { queue_worker::trace::layer(&settings) });
            tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(layer.with_filter(LevelFilter::INFO)),
            )
            .expect("no other global subscriber in this test binary");
            (runtime, collector, file)
        })
        .join()
        .expect("the collector started")
    });
    file
}

#[tokio::test]
async fn a_runs_spans_are_collected_and_an_imports_tree_holds_its_request_and_its_records() {
    let file = collected_spans();
    let template = Template::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../template.yaml"
    ))
    .unwrap();
    let options = Options {
        maximum_concurrency: Some(2),
        function_timeout: Some(demo::FUNCTION_TIMEOUT),
        ..Options::default()
    };
    let stack = unique_name("trace");
    let pipeline = Pipeline::start(&template, &stack, &options).await.unwrap();
    let burst = Burst::new(3, (5, 0, 0), Duration::from_secs(120), 2);
    let outcome = demo::run(&pipeline, burst, None).await;
    // Stopping flushes the spans that ended since the last export.
    pipeline.stop().await;
    outcome.unwrap();

    let (spans, unreadable) = traces::read(file).unwrap();
    assert_eq!(unreadable, 0);
    // The jobs this run's processor ran (other tests of this binary export too).
    let mut imports: Vec<&str> = spans
        .iter()
        .filter(|span| span.name.starts_with(&format!("process {stack}-")))
        .filter_map(|span| span.attributes.get("job_id")?.as_str())
        .collect();
    imports.sort_unstable();
    imports.dedup();
    assert!(
        !imports.is_empty(),
        "no record of this run among {} spans",
        spans.len()
    );
    for id in imports {
        let tree = JobTree::of(&spans, id).unwrap();
        let names: Vec<&str> = tree.spans().iter().map(|span| span.name.as_str()).collect();
        assert_eq!(names[..2], ["POST /imports", "accept"], "{tree}");
        let records = tree
            .spans()
            .into_iter()
            .filter(|span| span.name.starts_with("process "))
            .count();
        assert!(records >= 1, "the tree has no record of the job:\n{tree}");
        assert!(tree.to_string().contains("↳ linked: process "), "{tree}");
    }
}
