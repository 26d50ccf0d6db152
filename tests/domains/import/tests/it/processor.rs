//! The processor end to end against the emulator, with real messages: jobs are sent to a real
//! queue, received, turned into the event Lambda would deliver (real ids and receipt handles),
//! and handled; objects live in a real bucket, rows land in a real table.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sqs::types::QueueAttributeName;
use harness::{
    RequestCounter, TestQueue, acknowledge, create_bucket, create_idempotency_table, s3_client,
    sdk_config,
};
use import_processor::{DynamoDbItems, ItemWriter, Parts, Row, S3ObjectSource, WriteError};
use import_tests::{create_imports_table, create_items_table, processor_config};
use imports::{
    DynamoDbImports, ImportFormat, ImportId, ImportJob, ImportRecord, ImportStatus, ImportStore,
    ObjectKey,
};
use queue_worker::batch::{BatchOutcome, SqsQueueActions, dlq_attributes};
use queue_worker::idempotency::DynamoDbStore;
use queue_worker::job::{JobQueue, SqsJobQueue};
use queue_worker::protection::DependencySettings;

/// The stand-in for a flaky downstream: fails the first `failures` calls, and every call whose
/// rows include a SKU starting with `FAIL-`, as transient errors.
struct Flaky<W> {
    inner: W,
    failures: AtomicU32,
    calls: Arc<AtomicU32>,
    /// Rows sent to the table (in writes not failed by injection).
    rows_sent: Arc<AtomicU64>,
    /// Rows of those writes the worker did not see succeed: the write was dropped before it
    /// answered (a time-out, or the chunk's drain instant) or answered with an error. The
    /// worker writes these rows again; no other row may be sent twice.
    rows_unacknowledged: Arc<AtomicU64>,
    /// How long each write takes on top of the table's own time: a slow downstream.
    delay: Duration,
}

impl<W: ItemWriter> ItemWriter for Flaky<W> {
    async fn write(&self, import_id: ImportId, rows: &[Row]) -> Result<(), WriteError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let scheduled = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if scheduled || rows.iter().any(|row| row.sku.starts_with("FAIL-")) {
            return Err(WriteError::Unavailable(
                "injected downstream failure".into(),
            ));
        }
        self.rows_sent
            .fetch_add(rows.len() as u64, Ordering::SeqCst);
        let pending = Unacknowledged {
            rows: rows.len() as u64,
            count: Some(Arc::clone(&self.rows_unacknowledged)),
        };
        tokio::time::sleep(self.delay).await;
        let written = self.inner.write(import_id, rows).await;
        if written.is_ok() {
            pending.acknowledged();
        }
        written
    }
}

/// Counts its rows as unacknowledged when dropped, unless [`acknowledged`](Self::acknowledged).
struct Unacknowledged {
    rows: u64,
    count: Option<Arc<AtomicU64>>,
}

impl Unacknowledged {
    fn acknowledged(mut self) {
        self.count = None;
    }
}

impl Drop for Unacknowledged {
    fn drop(&mut self) {
        if let Some(count) = &self.count {
            count.fetch_add(self.rows, Ordering::SeqCst);
        }
    }
}

/// The production processor with a flaky writer and counted requests.
type Processor = import_processor::Processor<
    DynamoDbStore,
    S3ObjectSource,
    Flaky<DynamoDbItems>,
    DynamoDbImports,
    SqsJobQueue,
    SqsQueueActions,
>;

struct Pipeline {
    sqs: aws_sdk_sqs::Client,
    s3: aws_sdk_s3::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    bucket: String,
    items_table: String,
    imports: DynamoDbImports,
    queue: TestQueue,
    dlq: TestQueue,
    /// Requests of the guard and import records.
    control_requests: RequestCounter,
    /// Requests to the items table.
    item_requests: RequestCounter,
    writer_calls: Arc<AtomicU32>,
    /// Rows the processor's writer sent to the items table.
    rows_sent: Arc<AtomicU64>,
    /// Rows of writes the processor did not see succeed ([`Flaky::rows_unacknowledged`]).
    rows_unacknowledged: Arc<AtomicU64>,
    protection: DependencySettings,
    write_delay: Duration,
}

const PROTECTION: DependencySettings = DependencySettings {
    timeout: Duration::from_secs(5),
    max_attempts: 1,
    retry_base: Duration::from_millis(10),
    failure_threshold: 100,
    open_for: Duration::from_secs(60),
};

impl Pipeline {
    async fn new() -> Self {
        let config = sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let sqs = aws_sdk_sqs::Client::new(&config);
        let s3 = s3_client(&config);
        let imports_table = create_imports_table(&dynamodb, "imports").await;
        // A 1 s visibility timeout makes failed messages come back quickly.
        let queue = TestQueue::create(
            &sqs,
            "jobs",
            &[(QueueAttributeName::VisibilityTimeout, "1")],
        )
        .await;
        Self {
            bucket: create_bucket(&s3, "uploads").await,
            items_table: create_items_table(&dynamodb, "items").await,
            imports: DynamoDbImports::new(dynamodb.clone(), &imports_table),
            dlq: TestQueue::create(&sqs, "jobs-dlq", &[]).await,
            queue,
            sqs,
            s3,
            dynamodb,
            control_requests: RequestCounter::default(),
            item_requests: RequestCounter::default(),
            writer_calls: Arc::default(),
            rows_sent: Arc::default(),
            rows_unacknowledged: Arc::default(),
            protection: PROTECTION,
            write_delay: Duration::ZERO,
        }
    }

    /// A processor (one execution environment) whose first `failures` writes fail.
    async fn processor(&self, failures: u32) -> Processor {
        let config = sdk_config().await;
        let control = self.control_requests.dynamodb_client(&config);
        let guard_table = create_idempotency_table(&self.dynamodb, "guard").await;
        self.processor_on(failures, &guard_table, control).await
    }

    async fn processor_on(
        &self,
        failures: u32,
        guard_table: &str,
        control: aws_sdk_dynamodb::Client,
    ) -> Processor {
        let sdk = sdk_config().await;
        let mut config = processor_config(
            &[
                ("IdempotencyTable", guard_table),
                ("ImportsTable", self.imports.table_name()),
                ("ItemsTable", &self.items_table),
                ("UploadBucket", &self.bucket),
                ("JobQueue", &self.queue.url),
                ("DeadLetterQueue", &self.dlq.url),
            ],
            &[
                ("IDEMPOTENCY_RETENTION_SECONDS", "3600"),
                ("IDEMPOTENCY_LEASE_MARGIN_SECONDS", "5"),
                ("IDEMPOTENCY_MAX_LEASE_SECONDS", "60"),
                ("BATCH_CONCURRENCY", "4"),
                ("BATCH_DEADLINE_MARGIN_MS", "2000"),
                ("RETRY_BACKOFF_BASE_SECONDS", "0"),
                ("MAX_OBJECT_BYTES", "8388608"),
            ],
        );
        config.items_table_protection = self.protection;
        let Parts { source, config, .. } = Parts::new(&config, &sdk);
        Parts {
            // The guard's and the import records' requests are counted.
            guard: DynamoDbStore::new(control.clone(), guard_table),
            imports: DynamoDbImports::new(control, self.imports.table_name()),
            writer: Flaky {
                inner: DynamoDbItems::new(
                    self.item_requests.dynamodb_client(&sdk),
                    &self.items_table,
                ),
                failures: AtomicU32::new(failures),
                calls: Arc::clone(&self.writer_calls),
                rows_sent: Arc::clone(&self.rows_sent),
                rows_unacknowledged: Arc::clone(&self.rows_unacknowledged),
                delay: self.write_delay,
            },
            source,
            jobs: SqsJobQueue::new(self.sqs.clone(), &self.queue.url),
            queue: SqsQueueActions::new(self.sqs.clone(), &self.dlq.url),
            config,
        }
        .build()
    }

    /// Uploads `contents` (unless `None`), records the import, and queues its job.
    async fn submit(&self, name: &str, contents: Option<&[u8]>, format: ImportFormat) -> ImportId {
        let key = ObjectKey::parse(&format!("uploads/{name}"), "uploads/").unwrap();
        if let Some(contents) = contents {
            self.s3
                .put_object()
                .bucket(&self.bucket)
                .key(key.as_str())
                .body(ByteStream::from(contents.to_vec()))
                .send()
                .await
                .unwrap();
        }
        let id = ImportId::generate();
        let record = ImportRecord::queued(
            id,
            key.clone(),
            format,
            "test".into(),
            imports::Principal::anonymous(),
            SystemTime::now(),
        );
        self.imports.create(&record).await.unwrap();
        self.send(&ImportJob::new(id, &key, format)).await;
        id
    }

    async fn send(&self, job: &ImportJob) {
        SqsJobQueue::new(self.sqs.clone(), &self.queue.url)
            .send(job, None)
            .await
            .unwrap();
    }

    /// Receives until `count` messages are in hand (as one event).
    async fn receive(&self, count: usize) -> SqsEvent {
        let mut event = SqsEvent::default();
        for _ in 0..20 {
            let more = self
                .queue
                .receive_event(
                    &self.sqs,
                    (count - event.records.len()) as i32,
                    Duration::from_secs(1),
                )
                .await;
            event.records.extend(more.records);
            if event.records.len() >= count {
                return event;
            }
        }
        panic!("only {} of {count} messages arrived", event.records.len());
    }

    /// Handles `event` as Lambda would, then deletes what the response acknowledged.
    async fn run(&self, processor: &Processor, event: &SqsEvent) -> BatchOutcome {
        self.run_until(
            processor,
            event,
            SystemTime::now() + Duration::from_secs(60),
        )
        .await
    }

    /// [`run`](Self::run) in an invocation ending at `deadline`.
    async fn run_until(
        &self,
        processor: &Processor,
        event: &SqsEvent,
        deadline: SystemTime,
    ) -> BatchOutcome {
        let outcome = processor.process(event, deadline).await;
        let response = match &outcome.result {
            Ok(response) => response.clone(),
            Err(_) => failed_all(event),
        };
        acknowledge(&self.sqs, &self.queue, event, &response).await;
        outcome
    }

    /// Delivers whatever the queue holds to `processor`, in invocations that each last
    /// `invocation`, until import `id` is `COMPLETED` or `FAILED`. Returns the invocations.
    async fn drive(&self, processor: &Processor, id: ImportId, invocation: Duration) -> usize {
        self.drive_until(processor, id, invocation, |import| {
            matches!(
                import.status,
                ImportStatus::Completed | ImportStatus::Failed
            )
        })
        .await
    }

    /// [`drive`](Self::drive) until `done` holds for the import.
    async fn drive_until(
        &self,
        processor: &Processor,
        id: ImportId,
        invocation: Duration,
        done: impl Fn(&ImportRecord) -> bool,
    ) -> usize {
        let mut invocations = 0;
        for _ in 0..60 {
            let event = self
                .queue
                .receive_event(&self.sqs, 10, Duration::from_secs(1))
                .await;
            if !event.records.is_empty() {
                invocations += 1;
                self.run_until(processor, &event, SystemTime::now() + invocation)
                    .await;
            }
            if done(&self.import(id).await) {
                return invocations;
            }
        }
        panic!("import {id} did not finish");
    }

    async fn import(&self, id: ImportId) -> ImportRecord {
        self.imports
            .get(id)
            .await
            .unwrap()
            .expect("the import exists")
    }

    async fn item_count(&self) -> usize {
        self.dynamodb
            .scan()
            .table_name(&self.items_table)
            .send()
            .await
            .unwrap()
            .count as usize
    }
}

fn failed_all(event: &SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in &event.records {
        response.add_failure(record.message_id.clone().unwrap());
    }
    response
}

fn failed_ids(outcome: &BatchOutcome) -> Vec<String> {
    let mut ids: Vec<String> = outcome
        .result
        .as_ref()
        .expect("a partial batch response")
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    ids.sort();
    ids
}

/// A CSV of `rows` valid rows, SKUs prefixed by `prefix`.
fn csv(prefix: &str, rows: usize) -> Vec<u8> {
    let mut csv = String::from("sku,name,quantity,price\n");
    for i in 0..rows {
        csv.push_str(&format!("{prefix}-{i},Item {i},{i},{}.99\n", i % 100));
    }
    csv.into_bytes()
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(op, n)| ((*op).to_owned(), *n)).collect()
}

#[tokio::test]
async fn a_good_file_is_imported_and_the_import_completed_with_counts() {
    let p = Pipeline::new().await;
    let mut file = csv("A", 60);
    file.extend_from_slice(b"bad sku!,X,1,1\n");
    let id = p.submit("good.csv", Some(&file), ImportFormat::Csv).await;
    let processor = p.processor(0).await;
    let event = p.receive(1).await;
    p.control_requests.reset();
    p.item_requests.reset();

    let outcome = p.run(&processor, &event).await;
    assert!(failed_ids(&outcome).is_empty());
    assert_eq!(p.item_count().await, 60);
    let import = p.import(id).await;
    assert_eq!(import.status, ImportStatus::Completed);
    assert_eq!(
        (import.rows_written, import.rows_rejected),
        (Some(60), Some(1))
    );
    assert_eq!(
        import.error.as_deref(),
        Some("1 row rejected: line 62: sku must be 1 to 64 letters, digits, '-' or '_'")
    );

    // The request budget of one new job: the guard's claim and completion, the import's start
    // and commit, and one BatchWriteItem per 25 rows.
    assert_eq!(
        p.control_requests.snapshot(),
        counts(&[("PutItem", 1), ("UpdateItem", 3)])
    );
    assert_eq!(p.item_requests.snapshot(), counts(&[("BatchWriteItem", 3)]));
    assert_eq!(p.queue.depth(&p.sqs).await, 0);
}

#[tokio::test]
async fn an_ndjson_file_is_imported() {
    let p = Pipeline::new().await;
    let ndjson = b"{\"sku\":\"N-1\",\"name\":\"One\",\"quantity\":1,\"price\":1.5}\n{\"sku\":\"N-2\",\"name\":\"Two\",\"quantity\":2,\"price\":\"2\"}\n";
    let id = p
        .submit("good.ndjson", Some(ndjson), ImportFormat::Ndjson)
        .await;
    let processor = p.processor(0).await;
    let outcome = p.run(&processor, &p.receive(1).await).await;
    assert!(failed_ids(&outcome).is_empty());
    let item = p
        .dynamodb
        .get_item()
        .table_name(&p.items_table)
        .key("sku", AttributeValue::S("N-1".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(item["price"], AttributeValue::N("1.50".into()));
    assert_eq!(item["import_id"], AttributeValue::S(id.to_string()));
    assert_eq!(p.import(id).await.rows_written, Some(2));
}

#[tokio::test]
async fn a_repeated_sku_is_written_in_order_and_the_later_row_wins() {
    let p = Pipeline::new().await;
    let file = b"sku,name,quantity,price\nS-1,First,1,1.00\nS-2,Other,2,2.00\nS-1,Second,3,3.00\n";
    let id = p.submit("repeat.csv", Some(file), ImportFormat::Csv).await;
    let processor = p.processor(0).await;
    let outcome = p.run(&processor, &p.receive(1).await).await;
    assert!(failed_ids(&outcome).is_empty());
    let import = p.import(id).await;
    assert_eq!(import.status, ImportStatus::Completed);
    assert_eq!(import.rows_written, Some(3));
    let item = p
        .dynamodb
        .get_item()
        .table_name(&p.items_table)
        .key("sku", AttributeValue::S("S-1".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(item["name"], AttributeValue::S("Second".into()));
}

#[tokio::test]
async fn the_same_job_delivered_twice_is_imported_once() {
    let p = Pipeline::new().await;
    let key = ObjectKey::parse("uploads/twice.csv", "uploads/").unwrap();
    let id = p
        .submit("twice.csv", Some(&csv("T", 30)), ImportFormat::Csv)
        .await;
    p.send(&ImportJob::new(id, &key, ImportFormat::Csv)).await;
    let processor = p.processor(0).await;

    let first = p.receive(1).await;
    p.run(&processor, &first).await;
    p.item_requests.reset();
    p.control_requests.reset();

    let second = p.receive(1).await;
    let outcome = p.run(&processor, &second).await;
    assert!(
        failed_ids(&outcome).is_empty(),
        "a duplicate is acknowledged"
    );
    assert_eq!(
        outcome
            .summary
            .count(queue_worker::batch::RecordStatus::Duplicate),
        1
    );
    assert!(
        p.item_requests.snapshot().is_empty(),
        "no row written again"
    );
    assert_eq!(
        p.control_requests.snapshot(),
        counts(&[("PutItem", 1)]),
        "one conditional write, no second COMPLETED transition"
    );
    assert_eq!(p.import(id).await.status, ImportStatus::Completed);
}

#[tokio::test]
async fn a_redelivery_whose_idempotency_record_was_lost_is_counted_as_a_duplicate() {
    let p = Pipeline::new().await;
    let key = ObjectKey::parse("uploads/lost.csv", "uploads/").unwrap();
    let id = p
        .submit("lost.csv", Some(&csv("L", 5)), ImportFormat::Csv)
        .await;
    p.send(&ImportJob::new(id, &key, ImportFormat::Csv)).await;
    p.send(&ImportJob::new(id, &key, ImportFormat::Csv)).await;

    let first = p.run(&p.processor(0).await, &p.receive(1).await).await;
    assert_eq!(
        first
            .summary
            .count(queue_worker::batch::RecordStatus::Processed),
        1
    );
    // A second execution environment on an empty guard table: as if the first one's record
    // had never been completed and its lease had run out.
    let second = p.run(&p.processor(0).await, &p.receive(1).await).await;

    assert!(failed_ids(&second).is_empty());
    assert_eq!(
        (
            second
                .summary
                .count(queue_worker::batch::RecordStatus::Processed),
            second
                .summary
                .count(queue_worker::batch::RecordStatus::Duplicate)
        ),
        (0, 1),
        "the import was completed by the first delivery, not this one"
    );
    assert_eq!(p.import(id).await.status, ImportStatus::Completed);
}

#[tokio::test]
async fn the_same_job_delivered_twice_concurrently_is_imported_once() {
    let p = Pipeline::new().await;
    let key = ObjectKey::parse("uploads/race.csv", "uploads/").unwrap();
    let id = p
        .submit("race.csv", Some(&csv("R", 50)), ImportFormat::Csv)
        .await;
    p.send(&ImportJob::new(id, &key, ImportFormat::Csv)).await;

    // Two execution environments sharing only AWS: the same guard table, separate clients.
    let config = sdk_config().await;
    let guard_table = create_idempotency_table(&p.dynamodb, "guard").await;
    let one = p
        .processor_on(0, &guard_table, p.control_requests.dynamodb_client(&config))
        .await;
    let two = p
        .processor_on(0, &guard_table, p.control_requests.dynamodb_client(&config))
        .await;
    let (a, b) = (p.receive(1).await, p.receive(1).await);
    // A short invocation, so the claim's lease (deadline + the 5 s lease margin) ends soon.
    let deadline = SystemTime::now() + Duration::from_secs(8);
    let (first, second) = tokio::join!(
        p.run_until(&one, &a, deadline),
        p.run_until(&two, &b, deadline)
    );

    use queue_worker::batch::RecordStatus::{Duplicate, Processed, Retried};
    let count = |status| first.summary.count(status) + second.summary.count(status);
    assert_eq!(
        count(Processed),
        1,
        "exactly one environment imported the file"
    );
    // The other saw the claim in progress, or, if it came late, the completed claim.
    let mut duplicates = count(Duplicate);
    if count(Retried) == 1 {
        // Its message stays invisible until the holder's lease has run out (the holder might
        // have died: nothing can succeed before then), then comes back as a duplicate.
        let again = p.receive(1).await;
        let lease_end = deadline + Duration::from_secs(5);
        assert!(
            SystemTime::now() >= lease_end,
            "an in-progress job came back {:?} before the holder's lease ended",
            lease_end
                .duration_since(SystemTime::now())
                .unwrap_or_default()
        );
        duplicates += p.run(&one, &again).await.summary.count(Duplicate);
    }
    assert_eq!(duplicates, 1);

    assert_eq!(
        p.item_requests.snapshot(),
        counts(&[("BatchWriteItem", 2)]),
        "rows written once"
    );
    assert_eq!(p.import(id).await.status, ImportStatus::Completed);
    assert_eq!(p.item_count().await, 50);
}

#[tokio::test]
async fn poison_jobs_are_parked_with_their_reason_and_fail_their_import_only() {
    let p = Pipeline::new().await;
    let good = p
        .submit("fine.csv", Some(&csv("G", 3)), ImportFormat::Csv)
        .await;
    let missing = p.submit("missing.csv", None, ImportFormat::Csv).await;
    let garbage = p
        .submit(
            "garbage.csv",
            Some(&[0xff, 0xfe, 0x00, 0x81, b'\n', 0xc3]),
            ImportFormat::Csv,
        )
        .await;
    let columns = p
        .submit(
            "columns.csv",
            Some(b"id,title\n1,Widget\n"),
            ImportFormat::Csv,
        )
        .await;
    let processor = p.processor(0).await;

    let outcome = p.run(&processor, &p.receive(4).await).await;
    assert!(
        failed_ids(&outcome).is_empty(),
        "parked records are acknowledged"
    );
    assert_eq!(p.import(good).await.status, ImportStatus::Completed);
    assert_eq!(p.queue.depth(&p.sqs).await, 0);

    let parked = p
        .dlq
        .receive_event(&p.sqs, 10, Duration::from_secs(1))
        .await;
    assert_eq!(parked.records.len(), 3);
    let mut classes = BTreeMap::new();
    for record in &parked.records {
        let attribute = |name: &str| {
            record.message_attributes[name]
                .string_value
                .clone()
                .unwrap()
        };
        classes.insert(attribute("job_id"), attribute(dlq_attributes::ERROR_CLASS));
        assert!(!attribute(dlq_attributes::REASON).is_empty());
    }
    assert_eq!(classes[&missing.to_string()], "object_missing");
    assert_eq!(classes[&garbage.to_string()], "invalid_file");
    assert_eq!(classes[&columns.to_string()], "invalid_file");
    for id in [missing, garbage, columns] {
        let import = p.import(id).await;
        assert_eq!(import.status, ImportStatus::Failed, "{id}");
        assert!(import.error.is_some());
    }
}

#[tokio::test]
async fn a_job_whose_object_key_hides_a_format_character_is_parked_and_its_file_never_read() {
    let p = Pipeline::new().await;
    // A file really is there under the look-alike key: the processor must refuse the key
    // itself, not merely fail to find the object. The job comes from something other than this
    // producer (which refuses such keys): a queue is not a trust boundary.
    let key = ObjectKey::from_stored("uploads/orders\u{200B}.csv");
    p.s3.put_object()
        .bucket(&p.bucket)
        .key(key.as_str())
        .body(ByteStream::from(csv("Z", 2)))
        .send()
        .await
        .unwrap();
    let id = ImportId::generate();
    let record = ImportRecord::queued(
        id,
        key.clone(),
        ImportFormat::Csv,
        "test".into(),
        imports::Principal::anonymous(),
        SystemTime::now(),
    );
    p.imports.create(&record).await.unwrap();
    p.send(&ImportJob::new(id, &key, ImportFormat::Csv)).await;
    let processor = p.processor(0).await;

    let outcome = p.run(&processor, &p.receive(1).await).await;
    assert!(
        failed_ids(&outcome).is_empty(),
        "a parked record is acknowledged"
    );
    assert_eq!(p.item_count().await, 0);
    let import = p.import(id).await;
    assert_eq!(import.status, ImportStatus::Failed);
    assert!(
        import
            .error
            .as_deref()
            .is_some_and(|e| e.contains("invisible format characters") && e.contains("U+200B")),
        "{:?}",
        import.error
    );
    let parked = p
        .dlq
        .receive_event(&p.sqs, 10, Duration::from_secs(1))
        .await;
    assert_eq!(parked.records.len(), 1);
    assert_eq!(
        parked.records[0].message_attributes[dlq_attributes::ERROR_CLASS]
            .string_value
            .as_deref(),
        Some("unsafe_object_key")
    );
}

#[tokio::test]
async fn a_transient_downstream_failure_is_retried_and_succeeds_on_redelivery() {
    let p = Pipeline::new().await;
    let id = p
        .submit("flaky.csv", Some(&csv("F", 10)), ImportFormat::Csv)
        .await;
    let processor = p.processor(1).await;

    let outcome = p.run(&processor, &p.receive(1).await).await;
    assert!(
        outcome.result.is_err(),
        "a batch whose only record failed fails the invocation"
    );
    let started = p.import(id).await;
    assert_eq!(
        (started.status, started.chunks, started.rows_written),
        (ImportStatus::Processing, None, None),
        "started, nothing counted"
    );

    let outcome = p.run(&processor, &p.receive(1).await).await;
    assert!(failed_ids(&outcome).is_empty());
    assert_eq!(p.import(id).await.status, ImportStatus::Completed);
    assert_eq!(p.item_count().await, 10);
}

#[tokio::test]
async fn with_the_circuit_open_records_fail_fast_without_calling_the_downstream() {
    let mut p = Pipeline::new().await;
    p.protection.failure_threshold = 1;
    for i in 0..3 {
        p.submit(
            &format!("down-{i}.csv"),
            Some(&csv("FAIL", 1)),
            ImportFormat::Csv,
        )
        .await;
    }
    let processor = p.processor(0).await;
    let event = p.receive(3).await;
    let outcome = p.run(&processor, &event).await;

    assert_eq!(outcome.summary.failed(), 3);
    assert!(processor.handler().worker().items_table().is_circuit_open());
    assert!(
        p.writer_calls.load(Ordering::SeqCst) < 3,
        "after the circuit opened, records failed without a call"
    );
}

#[tokio::test]
async fn a_mixed_batch_of_ten_reports_exactly_the_right_failures() {
    let p = Pipeline::new().await;
    let processor = p.processor(0).await;
    // A job completed before, delivered again.
    let done = p
        .submit("done.csv", Some(&csv("D", 2)), ImportFormat::Csv)
        .await;
    p.run(&processor, &p.receive(1).await).await;
    let key = ObjectKey::parse("uploads/done.csv", "uploads/").unwrap();
    p.send(&ImportJob::new(done, &key, ImportFormat::Csv)).await;

    for i in 0..5 {
        p.submit(
            &format!("ok-{i}.csv"),
            Some(&csv(&format!("OK{i}"), 2)),
            ImportFormat::Csv,
        )
        .await;
    }
    p.submit("gone.csv", None, ImportFormat::Csv).await;
    p.sqs
        .send_message()
        .queue_url(&p.queue.url)
        .message_body("{not a job")
        .send()
        .await
        .unwrap();
    let flaky_one = p
        .submit("flaky-1.csv", Some(&csv("FAIL", 1)), ImportFormat::Csv)
        .await;
    let flaky_two = p
        .submit("flaky-2.csv", Some(&csv("FAIL", 2)), ImportFormat::Csv)
        .await;

    let event = p.receive(10).await;
    let expected_failures: Vec<String> = {
        let mut ids: Vec<String> = event
            .records
            .iter()
            .filter(|r| {
                let id = r
                    .message_attributes
                    .get("job_id")
                    .and_then(|a| a.string_value.clone());
                id == Some(flaky_one.to_string()) || id == Some(flaky_two.to_string())
            })
            .map(|r| r.message_id.clone().unwrap())
            .collect();
        ids.sort();
        ids
    };
    let outcome = p.run(&processor, &event).await;

    assert_eq!(failed_ids(&outcome), expected_failures);
    let count = |status| outcome.summary.count(status);
    use queue_worker::batch::RecordStatus::*;
    assert_eq!(
        (
            count(Processed),
            count(Duplicate),
            count(Parked),
            count(Retried)
        ),
        (5, 1, 2, 2)
    );
}

// Time-bounded work. The harness's processor stops work 2 s before an invocation's deadline.

/// A pipeline whose writes take 300 ms more, and an import of 600 rows (`{prefix}-{i}`) in
/// `{name}`: with 3 s invocations (1 s of work), it takes several chunks.
async fn chunked_import(name: &str, prefix: &str) -> (Pipeline, ImportId) {
    let mut p = Pipeline::new().await;
    p.write_delay = Duration::from_millis(300);
    let id = p
        .submit(name, Some(&csv(prefix, 600)), ImportFormat::Csv)
        .await;
    (p, id)
}

/// Two execution environments sharing only AWS: one guard table, separate clients.
async fn two_environments(p: &Pipeline) -> (String, Processor, Processor) {
    let config = sdk_config().await;
    let guard_table = create_idempotency_table(&p.dynamodb, "guard").await;
    let one = p
        .processor_on(0, &guard_table, p.control_requests.dynamodb_client(&config))
        .await;
    let two = p
        .processor_on(0, &guard_table, p.control_requests.dynamodb_client(&config))
        .await;
    (guard_table, one, two)
}

/// A CSV of `rows` valid rows (SKUs `{prefix}-{i}`) with an invalid row before each row index
/// in `bad_before`.
fn csv_with_rejects(prefix: &str, rows: usize, bad_before: &[usize]) -> Vec<u8> {
    let mut csv = String::from("sku,name,quantity,price\n");
    for i in 0..rows {
        if bad_before.contains(&i) {
            csv.push_str(&format!("bad sku {i},Broken,1,1\n"));
        }
        csv.push_str(&format!("{prefix}-{i},Item {i},{i},{}.99\n", i % 100));
    }
    csv.into_bytes()
}

#[tokio::test]
async fn a_small_job_started_with_little_time_left_completes_and_is_never_failed() {
    let p = Pipeline::new().await;
    let id = p
        .submit("tiny.csv", Some(&csv("T", 5)), ImportFormat::Csv)
        .await;
    let processor = p.processor(0).await;
    // 3.5 s left: 1.5 s of work time before the 2 s margin, plenty for five rows.
    let outcome = p
        .run_until(
            &processor,
            &p.receive(1).await,
            SystemTime::now() + Duration::from_millis(3500),
        )
        .await;
    assert_eq!(
        outcome
            .summary
            .count(queue_worker::batch::RecordStatus::Processed),
        1
    );
    let import = p.import(id).await;
    assert_eq!(import.status, ImportStatus::Completed);
    assert_eq!(import.rows_written, Some(5));
}

#[tokio::test]
async fn slow_jobs_under_a_short_deadline_continue_or_retry_and_each_completes_once() {
    let mut p = Pipeline::new().await;
    p.write_delay = Duration::from_millis(400);
    let mut ids = Vec::new();
    for i in 0..10 {
        let name = format!("slow-{i}.csv");
        ids.push(
            p.submit(&name, Some(&csv(&format!("S{i}"), 60)), ImportFormat::Csv)
                .await,
        );
    }
    let processor = p.processor(0).await;
    // 4 records at once, 3 writes of ~0.4 s per job, 2 s of work per invocation: some jobs
    // finish, some run out of time mid-file, some never start.
    let mut finished = false;
    for _ in 0..30 {
        let event = p
            .queue
            .receive_event(&p.sqs, 10, Duration::from_secs(1))
            .await;
        if !event.records.is_empty() {
            p.run_until(
                &processor,
                &event,
                SystemTime::now() + Duration::from_secs(4),
            )
            .await;
        }
        let mut done = 0;
        for id in &ids {
            let import = p.import(*id).await;
            assert_ne!(import.status, ImportStatus::Failed, "{import:?}");
            done += usize::from(import.status == ImportStatus::Completed);
        }
        if done == ids.len() {
            finished = true;
            break;
        }
    }
    assert!(
        finished,
        "every job completes after redelivery or continuation"
    );
    for id in &ids {
        let import = p.import(*id).await;
        assert_eq!(import.rows_written, Some(60), "{import:?}");
        assert_eq!(import.rows_rejected, Some(0));
    }
    assert_eq!(p.item_count().await, 600);
    assert!(
        p.dlq
            .receive_event(&p.sqs, 10, Duration::from_secs(1))
            .await
            .records
            .is_empty(),
        "nothing parked"
    );
}

#[tokio::test]
async fn a_file_larger_than_one_invocation_continues_across_chunks_with_exact_counts() {
    let mut p = Pipeline::new().await;
    p.write_delay = Duration::from_millis(300);
    let bad = [0, 40, 250, 251, 400, 555, 599];
    let id = p
        .submit(
            "big.csv",
            Some(&csv_with_rejects("B", 600, &bad)),
            ImportFormat::Csv,
        )
        .await;
    let processor = p.processor(0).await;
    let invocations = p.drive(&processor, id, Duration::from_secs(3)).await;

    let import = p.import(id).await;
    assert_eq!(import.status, ImportStatus::Completed, "{import:?}");
    assert_eq!(import.rows_written, Some(600));
    assert_eq!(import.rows_rejected, Some(7));
    let chunks = import.chunks.expect("a chunked import counts its chunks");
    assert!(
        chunks >= 3,
        "needed {chunks} chunks in {invocations} invocations"
    );
    assert!(
        import.checkpoint.is_none(),
        "a completed import keeps no checkpoint"
    );
    // The summary names the first five rejected rows, by their line in the whole file.
    let summary = import.error.expect("a summary of rejected rows");
    assert!(
        summary.starts_with("7 rows rejected: line 2: sku"),
        "{summary}"
    );
    for line in [43, 254, 256] {
        assert!(summary.contains(&format!("line {line}: sku")), "{summary}");
    }
    assert!(summary.ends_with("; and 2 more"), "{summary}");
    assert_eq!(p.item_count().await, 600);
    // Every chunk ended at its stop time with writes in flight, and awaited them: a row is
    // sent again only when a write of it did not answer in time or failed (a loaded machine
    // can make one miss the drain instant), never because a chunk ended. Dropping the writes
    // in flight at every stop would send the rows of `chunks - 1` boundaries twice.
    let sent = p.rows_sent.load(Ordering::SeqCst);
    let unacknowledged = p.rows_unacknowledged.load(Ordering::SeqCst);
    assert_eq!(
        sent,
        600 + unacknowledged,
        "writes per row over {chunks} chunks: every row sent twice was in a failed write"
    );
    let one_boundary = 2 * 25; // ITEM_WRITES_IN_FLIGHT (2) writes of 25 rows
    assert!(
        unacknowledged <= one_boundary && unacknowledged < (u64::from(chunks) - 1) * one_boundary,
        "{unacknowledged} rows written again over {chunks} chunks: the stops drop their writes"
    );
}

#[tokio::test]
async fn a_chunk_killed_mid_write_is_redone_after_its_lease_and_counts_once() {
    let (p, id) = chunked_import("killed.csv", "K").await;
    let processor = p.processor(0).await;

    // Kill the first invocation of chunk 0 and of chunk 1 mid-write (after some writes, before
    // the chunk is recorded): the future is dropped, nothing is acknowledged, and the claim's
    // lease holds the chunk until it runs out; then it is redone.
    for chunk in 0..2 {
        let event = p.receive(1).await;
        let job: ImportJob =
            serde_json::from_str(event.records[0].body.as_deref().unwrap()).unwrap();
        assert_eq!(job.chunk(), chunk);
        let killed = tokio::time::timeout(
            Duration::from_millis(700),
            processor.process(&event, SystemTime::now() + Duration::from_secs(3)),
        )
        .await;
        assert!(killed.is_err(), "the invocation was killed mid-chunk");
        p.drive_until(&processor, id, Duration::from_secs(3), |import| {
            import.chunks >= Some(chunk + 1)
        })
        .await;
    }
    p.drive(&processor, id, Duration::from_secs(3)).await;

    let import = p.import(id).await;
    assert_eq!(import.status, ImportStatus::Completed, "{import:?}");
    assert_eq!(import.rows_written, Some(600));
    assert!(import.chunks.unwrap() >= 3);
    assert_eq!(p.item_count().await, 600);
}

#[tokio::test]
async fn the_same_chunk_delivered_twice_at_once_counts_once() {
    let (p, id) = chunked_import("twice.csv", "W").await;
    let (_, one, two) = two_environments(&p).await;
    let invocation = || SystemTime::now() + Duration::from_secs(3);

    p.run_until(&one, &p.receive(1).await, invocation()).await;
    // Chunk 1's job, and a second copy of it (SQS delivers at least once).
    let continuation = p.receive(1).await;
    p.send(&serde_json::from_str(continuation.records[0].body.as_deref().unwrap()).unwrap())
        .await;
    let copy = p.receive(1).await;
    let (a, b) = tokio::join!(
        p.run_until(&one, &continuation, invocation()),
        p.run_until(&two, &copy, invocation())
    );
    use queue_worker::batch::RecordStatus::Processed;
    assert_eq!(
        a.summary.count(Processed) + b.summary.count(Processed),
        1,
        "one delivery of the chunk did the work"
    );
    p.drive(&one, id, Duration::from_secs(3)).await;

    let import = p.import(id).await;
    assert_eq!(import.status, ImportStatus::Completed, "{import:?}");
    assert_eq!(import.rows_written, Some(600));
    assert_eq!(p.item_count().await, 600);
}

#[tokio::test]
async fn a_worker_dying_after_its_chunk_was_recorded_leaves_the_next_chunk_queued_once() {
    let (p, id) = chunked_import("redo.csv", "D").await;
    let (guard_table, processor, _) = two_environments(&p).await;
    let first = p.receive(1).await;
    let body = first.records[0].body.clone().unwrap();
    p.run_until(
        &processor,
        &first,
        SystemTime::now() + Duration::from_secs(3),
    )
    .await;
    assert_eq!(p.import(id).await.status, ImportStatus::Processing);

    // As if the worker had died after recording chunk 0 and before completing its claim:
    // the claim is gone and chunk 0 is delivered again.
    p.dynamodb
        .delete_item()
        .table_name(&guard_table)
        .key(
            queue_worker::idempotency::attributes::KEY,
            AttributeValue::S(id.to_string()),
        )
        .send()
        .await
        .unwrap();
    p.send(&serde_json::from_str(&body).unwrap()).await;
    p.drive(&processor, id, Duration::from_secs(3)).await;

    let import = p.import(id).await;
    assert_eq!(import.status, ImportStatus::Completed, "{import:?}");
    assert_eq!(import.rows_written, Some(600));
    assert_eq!(p.item_count().await, 600);
}

#[tokio::test]
async fn a_redelivered_chunk_that_was_recorded_is_not_redone_and_queues_the_next_chunk() {
    let (p, id) = chunked_import("redelivered.csv", "E").await;
    let (guard_table, processor, _) = two_environments(&p).await;
    // Chunk 0 runs and is recorded, but its message is never acknowledged and its claim never
    // completed: the worker died right after the commit. The next chunk's job died with it.
    let first = p.receive(1).await;
    processor
        .process(&first, SystemTime::now() + Duration::from_secs(3))
        .await;
    let recorded = p.import(id).await;
    assert_eq!(recorded.status, ImportStatus::Processing);
    p.dynamodb
        .delete_item()
        .table_name(&guard_table)
        .key(
            queue_worker::idempotency::attributes::KEY,
            AttributeValue::S(id.to_string()),
        )
        .send()
        .await
        .unwrap();
    let chunk = |record: &aws_lambda_events::event::sqs::SqsMessage| {
        serde_json::from_str::<ImportJob>(record.body.as_deref().unwrap())
            .unwrap()
            .chunk()
    };
    let mut redelivered = SqsEvent::default();
    for _ in 0..20 {
        let event = p.receive(1).await;
        if chunk(&event.records[0]) == 0 {
            redelivered = event;
            break;
        }
        acknowledge(&p.sqs, &p.queue, &event, &SqsBatchResponse::default()).await;
    }
    assert_eq!(redelivered.records.len(), 1, "chunk 0 came back");

    // Chunk 0 comes back (receive count 2) and finds itself recorded: no write is redone, and
    // the next chunk's job is queued again from the stored checkpoint.
    p.item_requests.reset();
    let outcome = p.run(&processor, &redelivered).await;
    assert_eq!(
        outcome
            .summary
            .count(queue_worker::batch::RecordStatus::Duplicate),
        1
    );
    assert_eq!(p.item_requests.snapshot(), counts(&[]), "no write redone");
    let next = p.receive(1).await;
    let next_job: ImportJob =
        serde_json::from_str(next.records[0].body.as_deref().unwrap()).unwrap();
    assert_eq!(next_job.resume.as_ref(), recorded.checkpoint.as_deref());
    acknowledge(&p.sqs, &p.queue, &next, &failed_all(&next)).await;

    p.drive(&processor, id, Duration::from_secs(3)).await;
    let import = p.import(id).await;
    assert_eq!(import.status, ImportStatus::Completed, "{import:?}");
    assert_eq!(import.rows_written, Some(600));
    assert_eq!(p.item_count().await, 600);
}

#[tokio::test]
async fn an_object_replaced_mid_import_fails_it_as_changed_and_parks_the_chunk() {
    let (p, id) = chunked_import("replaced.csv", "R").await;
    let processor = p.processor(0).await;
    p.run_until(
        &processor,
        &p.receive(1).await,
        SystemTime::now() + Duration::from_secs(3),
    )
    .await;
    assert_eq!(p.import(id).await.status, ImportStatus::Processing);

    p.s3.put_object()
        .bucket(&p.bucket)
        .key("uploads/replaced.csv")
        .body(ByteStream::from(csv("X", 600)))
        .send()
        .await
        .unwrap();
    p.drive(&processor, id, Duration::from_secs(3)).await;

    let import = p.import(id).await;
    assert_eq!(import.status, ImportStatus::Failed);
    assert!(
        import
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("changed"),
        "{import:?}"
    );
    let parked = p
        .dlq
        .receive_event(&p.sqs, 10, Duration::from_secs(1))
        .await;
    assert_eq!(parked.records.len(), 1);
    assert_eq!(
        parked.records[0].message_attributes[dlq_attributes::ERROR_CLASS]
            .string_value
            .as_deref(),
        Some("object_changed")
    );
    // Nothing of the new file was written.
    let scan = p
        .dynamodb
        .scan()
        .table_name(&p.items_table)
        .send()
        .await
        .unwrap();
    assert!(
        scan.items()
            .iter()
            .all(|item| { item["sku"].as_s().is_ok_and(|sku| sku.starts_with("R-")) })
    );
}

#[tokio::test]
async fn the_same_job_reserialised_is_a_duplicate_not_a_payload_mismatch() {
    let p = Pipeline::new().await;
    let id = p
        .submit("same.csv", Some(&csv("Q", 5)), ImportFormat::Csv)
        .await;
    let processor = p.processor(0).await;
    let first = p.receive(1).await;
    let body = first.records[0].body.clone().unwrap();
    p.run(&processor, &first).await;

    let job: serde_json::Value = serde_json::from_str(&body).unwrap();
    let pretty = serde_json::to_string_pretty(&job).unwrap();
    assert_ne!(pretty, body);
    p.sqs
        .send_message()
        .queue_url(&p.queue.url)
        .message_body(pretty)
        .send()
        .await
        .unwrap();
    let outcome = p.run(&processor, &p.receive(1).await).await;
    assert_eq!(
        outcome
            .summary
            .count(queue_worker::batch::RecordStatus::Duplicate),
        1
    );
    assert_eq!(p.import(id).await.rows_written, Some(5));
}

#[tokio::test]
async fn a_job_of_an_unsupported_schema_version_is_parked_and_fails_its_import() {
    let p = Pipeline::new().await;
    let id = p
        .submit("future.csv", Some(&csv("F", 5)), ImportFormat::Csv)
        .await;
    let first = p.receive(1).await;
    acknowledge(&p.sqs, &p.queue, &first, &SqsBatchResponse::default()).await;
    let mut job: serde_json::Value =
        serde_json::from_str(first.records[0].body.as_deref().unwrap()).unwrap();
    job["schemaVersion"] = 2.into();
    p.sqs
        .send_message()
        .queue_url(&p.queue.url)
        .message_body(job.to_string())
        .send()
        .await
        .unwrap();
    let processor = p.processor(0).await;
    let outcome = p.run(&processor, &p.receive(1).await).await;
    assert_eq!(
        outcome
            .summary
            .count(queue_worker::batch::RecordStatus::Parked),
        1
    );
    let import = p.import(id).await;
    assert_eq!(import.status, ImportStatus::Failed);
    assert!(import.error.unwrap().contains("schema version 2"));
}

#[tokio::test]
async fn a_never_closed_quote_and_a_huge_line_park_their_jobs_with_a_bounded_reason_and_the_batch_completes()
 {
    const SECRET: &str = "TENANT-7-SECRET";
    let p = Pipeline::new().await;
    let mut good = Vec::new();
    for i in 0..3 {
        let file = csv(&format!("OK{i}"), 2);
        good.push(
            p.submit(&format!("ok-{i}.csv"), Some(&file), ImportFormat::Csv)
                .await,
        );
    }
    // Three rows, then a quote opened on line 5 and never closed: the rest of the file would be
    // one record.
    let mut open_quote = csv("Q", 3);
    open_quote.extend_from_slice(format!("Q-X,\"{SECRET}\x1b[31m,1,1\n").as_bytes());
    open_quote.extend_from_slice(&csv("R", 20_000)[24..]);
    let open_quote = p
        .submit("open-quote.csv", Some(&open_quote), ImportFormat::Csv)
        .await;
    // One line of 8 MB (the harness reads objects up to 8 MiB), with no quote at all.
    let mut long_line = b"sku,name,quantity,price\n".to_vec();
    long_line.extend_from_slice(SECRET.repeat(8_000_000 / SECRET.len()).as_bytes());
    long_line.extend_from_slice(b"\nL-1,Item,1,1\n");
    let long_line = p
        .submit("long-line.csv", Some(&long_line), ImportFormat::Csv)
        .await;
    let processor = p.processor(0).await;

    let outcome = p.run(&processor, &p.receive(5).await).await;
    assert!(failed_ids(&outcome).is_empty(), "nothing is retried");
    use queue_worker::batch::RecordStatus::*;
    assert_eq!(
        (
            outcome.summary.count(Processed),
            outcome.summary.count(Parked)
        ),
        (3, 2)
    );
    for id in good {
        let import = p.import(id).await;
        assert_eq!(import.status, ImportStatus::Completed, "{id}");
        assert_eq!(import.rows_written, Some(2), "{id}");
    }
    let parked = p
        .dlq
        .receive_event(&p.sqs, 10, Duration::from_secs(1))
        .await;
    assert_eq!(parked.records.len(), 2);
    // The processor's record limit, 64 KiB.
    let limit = 64 * 1024;
    let expected = BTreeMap::from([
        (
            open_quote.to_string(),
            format!("line 5: a record is longer than {limit} bytes"),
        ),
        (
            long_line.to_string(),
            format!("line 2: a record is longer than {limit} bytes"),
        ),
    ]);
    for record in &parked.records {
        let attribute = |name: &str| {
            record.message_attributes[name]
                .string_value
                .clone()
                .unwrap()
        };
        let id = attribute("job_id");
        assert_eq!(attribute(dlq_attributes::ERROR_CLASS), "invalid_file");
        let reason = attribute(dlq_attributes::REASON);
        assert_eq!(reason, expected[&id]);
        let import = p.import(id.parse().unwrap()).await;
        assert_eq!(import.status, ImportStatus::Failed);
        assert_eq!(import.error.as_deref(), Some(reason.as_str()));
    }
}
