//! The processor end to end against the emulator, with real messages: jobs are sent to a real
//! queue, received, turned into the event Lambda would deliver (real ids and receipt handles),
//! and handled; objects live in a real bucket, rows land in a real table.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sqs::types::QueueAttributeName;
use harness::{
    RequestCounter, TestQueue, acknowledge, create_bucket, create_idempotency_table,
    create_imports_table, create_items_table, s3_client, sdk_config,
};
use import_processor::{DynamoDbItems, ImportHandler, ItemWriter, Row, S3ObjectSource, WriteError};
use shared::batch::{BatchOutcome, BatchProcessor, BatchSettings, SqsQueueActions, dlq_attributes};
use shared::idempotency::{DynamoDbStore, GuardSettings, IdempotencyGuard};
use shared::imports::{
    DynamoDbImports, ImportFormat, ImportId, ImportJob, ImportRecord, ImportStatus, ImportStore,
    JobQueue, ObjectKey, SqsJobQueue,
};
use shared::protection::{Dependency, DependencySettings};

/// The stand-in for a flaky downstream: fails the first `failures` calls, and every call whose
/// rows include a SKU starting with `FAIL-`, as transient errors.
struct Flaky<W> {
    inner: W,
    failures: AtomicU32,
    calls: Arc<AtomicU32>,
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
        self.inner.write(import_id, rows).await
    }
}

type Handler = ImportHandler<
    DynamoDbStore,
    S3ObjectSource,
    Flaky<DynamoDbItems>,
    DynamoDbImports,
    SqsJobQueue,
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
    protection: DependencySettings,
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
            protection: PROTECTION,
        }
    }

    /// A processor (one execution environment) whose first `failures` writes fail.
    async fn processor(&self, failures: u32) -> BatchProcessor<Handler, SqsQueueActions> {
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
    ) -> BatchProcessor<Handler, SqsQueueActions> {
        let config = sdk_config().await;
        let guard = IdempotencyGuard::new(
            DynamoDbStore::new(control.clone(), guard_table),
            GuardSettings {
                retention: Duration::from_secs(3600),
                lease_margin: Duration::from_secs(5),
                max_lease: Duration::from_secs(60),
            },
        );
        let writer = Flaky {
            inner: DynamoDbItems::new(
                self.item_requests.dynamodb_client(&config),
                &self.items_table,
            ),
            failures: AtomicU32::new(failures),
            calls: Arc::clone(&self.writer_calls),
        };
        let handler = ImportHandler::new(
            guard,
            S3ObjectSource::new(self.s3.clone(), &self.bucket, 8 * 1024 * 1024),
            writer,
            DynamoDbImports::new(control, self.imports.table_name()),
            SqsJobQueue::new(self.sqs.clone(), &self.queue.url),
            Dependency::new("items-table", self.protection),
            "uploads/",
        );
        BatchProcessor::new(
            handler,
            SqsQueueActions::new(self.sqs.clone(), &self.dlq.url),
            BatchSettings {
                concurrency: NonZeroUsize::new(4).unwrap(),
                deadline_margin: Duration::from_secs(2),
                backoff: None,
            },
        )
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
        let record =
            ImportRecord::queued(id, key.clone(), format, "test".into(), SystemTime::now());
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
    async fn run(
        &self,
        processor: &BatchProcessor<Handler, SqsQueueActions>,
        event: &SqsEvent,
    ) -> BatchOutcome {
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
        processor: &BatchProcessor<Handler, SqsQueueActions>,
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

    // The request budget of one new job: the guard's claim and completion, one import update,
    // and one BatchWriteItem per 25 rows.
    assert_eq!(
        p.control_requests.snapshot(),
        counts(&[("PutItem", 1), ("UpdateItem", 2)])
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
            .count(shared::batch::RecordStatus::Duplicate),
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
        first.summary.count(shared::batch::RecordStatus::Processed),
        1
    );
    // A second execution environment on an empty guard table: as if the first one's record
    // had never been completed and its lease had run out.
    let second = p.run(&p.processor(0).await, &p.receive(1).await).await;

    assert!(failed_ids(&second).is_empty());
    assert_eq!(
        (
            second.summary.count(shared::batch::RecordStatus::Processed),
            second.summary.count(shared::batch::RecordStatus::Duplicate)
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

    use shared::batch::RecordStatus::{Duplicate, Processed, Retried};
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
        classes.insert(
            attribute("import_id"),
            attribute(dlq_attributes::ERROR_CLASS),
        );
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
    assert_eq!(p.import(id).await.status, ImportStatus::Queued);

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
    assert!(processor.handler().items_table().is_circuit_open());
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
                    .get("import_id")
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
    use shared::batch::RecordStatus::*;
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
