//! The request budget of the processor: the DynamoDB and SQS requests (retries included) the
//! real processor sends per record, counted on the wire against the emulator, for a new record,
//! a duplicate, a permanent failure (parked in the DLQ) and a retryable one (backed off).
//!
//! The guard's requests (idempotency table), the import bookkeeping (imports table), the item
//! writes (items table) and SQS are counted by separate clients, so each shows apart. Only the
//! processor's clients are counted: the receives and deletes that feed it are Lambda's.
//! S3 `GetObject` is not counted (one per job that gets past the guard).
//!
//! Run with the emulator up: `eval "$(make -s emulator-env)"; cargo bench -p import-tests
//! --bench request_budget`. Prints a table; with `BENCH_DIR` (as `request_budget.json`) set, also writes the counts there
//! as JSON.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_s3::primitives::ByteStream;
use harness::{
    RequestCounter, TestQueue, create_bucket, create_idempotency_table, s3_client, sdk_config,
};
use import_processor::{DynamoDbItems, Parts, ProcessorConfig, ProductionProcessor};
use import_tests::{create_imports_table, create_items_table, processor_config};
use imports::{
    DynamoDbImports, ImportFormat, ImportId, ImportJob, ImportRecord, ImportStore, ObjectKey,
};
use queue_worker::batch::{RecordStatus, SqsQueueActions};
use queue_worker::idempotency::{Decision, DynamoDbStore, GuardSettings, IdempotencyGuard};
use queue_worker::job::{Job, JobQueue, SqsJobQueue};
use serde_json::{Value, json};

/// Rows of the file a new record imports: one `BatchWriteItem`.
const ROWS: usize = 10;

/// DynamoDB operations that read.
const READS: &[&str] = &[
    "GetItem",
    "BatchGetItem",
    "Query",
    "Scan",
    "TransactGetItems",
    "ExecuteStatement",
];

/// The target: the guard's writes for a new record and for a duplicate, and no reads.
const TARGET_NEW_GUARD_WRITES: usize = 2;
const TARGET_DUPLICATE_GUARD_WRITES: usize = 1;

/// The production processor: its seams are the production ones, on counted clients.
type Processor = ProductionProcessor;

/// One counter per part of the processor.
#[derive(Default)]
struct Counters {
    guard: RequestCounter,
    imports: RequestCounter,
    items: RequestCounter,
    sqs: RequestCounter,
}

impl Counters {
    fn reset(&self) {
        for counter in [&self.guard, &self.imports, &self.items, &self.sqs] {
            counter.reset();
        }
    }

    fn take(&self) -> Counts {
        Counts {
            guard: self.guard.by_service(RequestCounter::DYNAMODB),
            imports: self.imports.by_service(RequestCounter::DYNAMODB),
            items: self.items.by_service(RequestCounter::DYNAMODB),
            sqs: self.sqs.by_service(RequestCounter::SQS),
        }
    }
}

/// What one record cost.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Counts {
    guard: BTreeMap<String, usize>,
    imports: BTreeMap<String, usize>,
    items: BTreeMap<String, usize>,
    sqs: BTreeMap<String, usize>,
}

impl Counts {
    fn dynamodb(&self) -> impl Iterator<Item = (&String, &usize)> {
        self.guard
            .iter()
            .chain(self.imports.iter())
            .chain(self.items.iter())
    }

    fn reads(&self) -> usize {
        self.dynamodb()
            .filter(|(op, _)| READS.contains(&op.as_str()))
            .map(|(_, n)| n)
            .sum()
    }

    fn dynamodb_writes(&self) -> usize {
        self.dynamodb()
            .filter(|(op, _)| !READS.contains(&op.as_str()))
            .map(|(_, n)| n)
            .sum()
    }

    fn guard_writes(&self) -> usize {
        self.guard
            .iter()
            .filter(|(op, _)| !READS.contains(&op.as_str()))
            .map(|(_, n)| n)
            .sum()
    }

    fn sqs_requests(&self) -> usize {
        self.sqs.values().sum()
    }
}

/// The requests in `a` that are not in `b`, by service.
fn minus(a: &Counts, b: &Counts) -> Value {
    let diff = |a: &BTreeMap<String, usize>, b: &BTreeMap<String, usize>| {
        a.iter()
            .filter_map(|(op, n)| {
                let extra = n.saturating_sub(b.get(op).copied().unwrap_or(0));
                (extra > 0).then(|| (op.clone(), json!(extra)))
            })
            .collect::<serde_json::Map<_, _>>()
    };
    let mut out = serde_json::Map::new();
    for (name, a, b) in [
        ("guard", &a.guard, &b.guard),
        ("imports", &a.imports, &b.imports),
        ("items", &a.items, &b.items),
        ("sqs", &a.sqs, &b.sqs),
    ] {
        let d = diff(a, b);
        if !d.is_empty() {
            out.insert(name.into(), Value::Object(d));
        }
    }
    Value::Object(out)
}

struct Bench {
    sqs: aws_sdk_sqs::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    s3: aws_sdk_s3::Client,
    bucket: String,
    guard_table: String,
    imports: DynamoDbImports,
    queue: TestQueue,
    /// The processor's settings: the code's defaults, as deployed (backoff on).
    config: ProcessorConfig,
    counters: Counters,
}

impl Bench {
    async fn new() -> Self {
        let config = sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let sqs = aws_sdk_sqs::Client::new(&config);
        let s3 = s3_client(&config);
        let imports_table = create_imports_table(&dynamodb, "imports").await;
        let bucket = create_bucket(&s3, "budget").await;
        let guard_table = create_idempotency_table(&dynamodb, "guard").await;
        let items_table = create_items_table(&dynamodb, "items").await;
        let queue = TestQueue::create(&sqs, "jobs", &[]).await;
        let dlq = TestQueue::create(&sqs, "dlq", &[]).await;
        let config = processor_config(
            &[
                ("IdempotencyTable", &guard_table),
                ("ImportsTable", &imports_table),
                ("ItemsTable", &items_table),
                ("UploadBucket", &bucket),
                ("JobQueue", &queue.url),
                ("DeadLetterQueue", &dlq.url),
            ],
            &[],
        );
        Self {
            imports: DynamoDbImports::new(dynamodb.clone(), imports_table),
            bucket,
            guard_table,
            queue,
            config,
            counters: Counters::default(),
            sqs,
            dynamodb,
            s3,
        }
    }

    /// One execution environment of the processor, configured as deployed (backoff on, the
    /// code's defaults), whose DynamoDB and SQS clients are counted.
    async fn processor(&self) -> Processor {
        let sdk = sdk_config().await;
        let Parts {
            source,
            jobs,
            config,
            ..
        } = Parts::new(&self.config, &sdk);
        Parts {
            guard: DynamoDbStore::new(
                self.counters.guard.dynamodb_client(&sdk),
                &config.worker.guard.table_name,
            ),
            source,
            writer: DynamoDbItems::new(
                self.counters.items.dynamodb_client(&sdk),
                &config.items_table,
            ),
            imports: DynamoDbImports::new(
                self.counters.imports.dynamodb_client(&sdk),
                &config.imports_table,
            ),
            // Continuations are not counted (no case here needs one).
            jobs,
            queue: SqsQueueActions::new(
                self.counters.sqs.sqs_client(&sdk),
                &config.worker.dead_letter_queue_url,
            ),
            config,
        }
        .build()
    }

    /// Uploads `rows` rows as `name` (none: the object is missing), records the import, and
    /// returns its job, not yet sent.
    async fn import(&self, name: &str, rows: Option<usize>) -> ImportJob {
        let key = ObjectKey::parse(&format!("uploads/{name}"), "uploads/").unwrap();
        if let Some(rows) = rows {
            let prefix: String = name.chars().filter(char::is_ascii_alphanumeric).collect();
            let mut csv = String::from("sku,name,quantity,price\n");
            for i in 0..rows {
                csv.push_str(&format!("{prefix}-{i},Item {i},{i},{}.99\n", i % 100));
            }
            self.s3
                .put_object()
                .bucket(&self.bucket)
                .key(key.as_str())
                .body(ByteStream::from(csv.into_bytes()))
                .send()
                .await
                .unwrap();
        }
        let id = ImportId::generate();
        let record = ImportRecord::queued(
            id,
            key.clone(),
            ImportFormat::Csv,
            "bench".into(),
            imports::Principal::anonymous(),
            SystemTime::now(),
        );
        self.imports.create(&record).await.unwrap();
        ImportJob::new(id, &key, ImportFormat::Csv)
    }

    /// Sends `job` as the producer does and receives it as the event Lambda would deliver.
    async fn deliver(&self, job: &ImportJob) -> SqsEvent {
        SqsJobQueue::new(self.sqs.clone(), &self.queue.url)
            .send(job, None)
            .await
            .unwrap();
        for _ in 0..20 {
            let event = self
                .queue
                .receive_event(&self.sqs, 1, Duration::from_secs(1))
                .await;
            if !event.records.is_empty() {
                return event;
            }
        }
        panic!("the job did not arrive");
    }

    /// Processes `event` (one record) and returns what it cost; the record must end `expected`.
    /// Then deletes the message, whatever became of it, so no case sees another's.
    async fn measure(
        &self,
        processor: &Processor,
        event: &SqsEvent,
        expected: RecordStatus,
    ) -> Counts {
        self.counters.reset();
        let outcome = processor
            .process(event, SystemTime::now() + Duration::from_secs(60))
            .await;
        let counts = self.counters.take();
        assert_eq!(
            outcome.summary.count(expected),
            1,
            "expected the record to be {expected}, got {:?}",
            outcome.summary
        );
        for record in &event.records {
            self.sqs
                .delete_message()
                .queue_url(&self.queue.url)
                .receipt_handle(record.receipt_handle.as_deref().unwrap())
                .send()
                .await
                .unwrap();
        }
        counts
    }

    /// A job held by another worker: claimed on the same guard table by a guard of its own.
    async fn in_progress_elsewhere(&self, job: &ImportJob) {
        let other = IdempotencyGuard::new(
            DynamoDbStore::new(self.dynamodb.clone(), &self.guard_table),
            GuardSettings::from(&self.config.worker.guard),
        );
        let decision = other
            .claim(
                &job.idempotency_key(),
                job.to_body().as_bytes(),
                Some(SystemTime::now() + Duration::from_secs(60)),
            )
            .await
            .unwrap();
        assert!(matches!(decision, Decision::Proceed(_)));
    }
}

struct Case {
    name: &'static str,
    description: &'static str,
    status: RecordStatus,
    counts: Counts,
    /// The target, when the issue sets one: (guard writes, DynamoDB reads).
    target: Option<(usize, usize)>,
}

impl Case {
    fn met(&self) -> Option<bool> {
        self.target.map(|(guard_writes, reads)| {
            self.counts.guard_writes() == guard_writes && self.counts.reads() == reads
        })
    }

    fn to_json(&self) -> Value {
        let mut case = json!({
            "case": self.name,
            "description": self.description,
            "status": self.status.as_str(),
            "guard": self.counts.guard,
            "imports": self.counts.imports,
            "items": self.counts.items,
            "sqs": self.counts.sqs,
            "reads": self.counts.reads(),
            "guard_writes": self.counts.guard_writes(),
            "dynamodb_writes": self.counts.dynamodb_writes(),
            "sqs_requests": self.counts.sqs_requests(),
        });
        if let Some((guard_writes, reads)) = self.target {
            case["target"] = json!({ "guard_writes": guard_writes, "reads": reads });
            case["target_met"] = json!(self.met());
        }
        case
    }
}

fn ops(counts: &BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return "-".into();
    }
    counts
        .iter()
        .map(|(op, n)| format!("{op} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::main]
async fn main() {
    let bench = Bench::new().await;
    let processor = bench.processor().await;
    let mut cases = Vec::new();

    // A new record: a valid job for an existing import whose file exists.
    let job = bench.import("new.csv", Some(ROWS)).await;
    let event = bench.deliver(&job).await;
    cases.push(Case {
        name: "new",
        description: "a valid job for an existing import, 10-row CSV",
        status: RecordStatus::Processed,
        counts: bench
            .measure(&processor, &event, RecordStatus::Processed)
            .await,
        target: Some((TARGET_NEW_GUARD_WRITES, 0)),
    });

    // The same job delivered again after it completed.
    let event = bench.deliver(&job).await;
    cases.push(Case {
        name: "duplicate",
        description: "the same job delivered again after it completed",
        status: RecordStatus::Duplicate,
        counts: bench
            .measure(&processor, &event, RecordStatus::Duplicate)
            .await,
        target: Some((TARGET_DUPLICATE_GUARD_WRITES, 0)),
    });

    // A permanent failure: the job names an object that is not there.
    let job = bench.import("missing.csv", None).await;
    let event = bench.deliver(&job).await;
    cases.push(Case {
        name: "failed_permanent",
        description: "the object is missing: import FAILED, job parked in the DLQ",
        status: RecordStatus::Parked,
        counts: bench
            .measure(&processor, &event, RecordStatus::Parked)
            .await,
        target: None,
    });

    // A retryable failure: another worker holds the job. The first backoff of an execution
    // environment also looks up the queue's URL (once); measure it, then a warm one.
    let mut retries = Vec::new();
    for name in ["busy-1.csv", "busy-2.csv"] {
        let job = bench.import(name, Some(ROWS)).await;
        bench.in_progress_elsewhere(&job).await;
        let event = bench.deliver(&job).await;
        retries.push(
            bench
                .measure(&processor, &event, RecordStatus::Retried)
                .await,
        );
    }
    let once_per_environment = minus(&retries[0], &retries[1]);
    cases.push(Case {
        name: "failed_retryable",
        description: "in progress elsewhere: backed off with ChangeMessageVisibility",
        status: RecordStatus::Retried,
        counts: retries.pop().unwrap(),
        target: None,
    });

    println!(
        "request_budget: requests per record sent by the processor's clients (retries included)"
    );
    println!(
        "{:<17} {:<10} {:<30} {:<14} {:<16} {:<36} {:>5}",
        "case", "status", "guard (idempotency)", "imports", "items", "sqs", "reads"
    );
    for case in &cases {
        println!(
            "{:<17} {:<10} {:<30} {:<14} {:<16} {:<36} {:>5}",
            case.name,
            case.status.as_str(),
            ops(&case.counts.guard),
            ops(&case.counts.imports),
            ops(&case.counts.items),
            ops(&case.counts.sqs),
            case.counts.reads()
        );
    }
    println!("once per execution environment, on its first backoff: {once_per_environment}");
    for case in &cases {
        if let (Some(met), Some((guard_writes, reads))) = (case.met(), case.target) {
            println!(
                "target for {}: {guard_writes} guard write(s), {reads} reads: {} ({} guard write(s), {} reads)",
                case.name,
                if met { "met" } else { "NOT met" },
                case.counts.guard_writes(),
                case.counts.reads()
            );
        }
    }

    if let Some(path) = std::env::var_os("BENCH_DIR")
        .filter(|dir| !dir.is_empty())
        .map(|dir| {
            std::path::PathBuf::from(dir)
                .join("request_budget.json")
                .into_os_string()
        })
        .filter(|p| !p.is_empty())
    {
        let report = json!({
            // The report's columns: each case's key holding its requests to one place, titled.
            "columns": [
                ["guard", "guard (idempotency table)"],
                ["imports", "import record"],
                ["items", "items table"],
                ["sqs", "SQS"],
            ],
            "rows_per_new_record": ROWS,
            "cases": cases.iter().map(Case::to_json).collect::<Vec<_>>(),
            "once_per_environment": once_per_environment,
            "not_counted": "S3 GetObject (one per job past the guard); the receives and deletes of the event source mapping",
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap() + "\n")
            .unwrap_or_else(|e| panic!("write {}: {e}", path.to_string_lossy()));
        println!("wrote {}", path.to_string_lossy());
    }
}
