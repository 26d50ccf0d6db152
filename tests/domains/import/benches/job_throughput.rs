//! Rows per second of ONE import job, against a ceiling measured in the same run.
//!
//! The handler: the real processor (guard, S3 stream, validation, circuit breaker, import
//! record) imports one job of a CSV file of [`ROWS`] rows into a fresh items table, with its
//! item writes `K` requests in flight (`ITEM_WRITES_IN_FLIGHT`). The deadline is far away, so
//! the job finishes in one chunk.
//!
//! The ceiling: a plain SDK loop that writes the same rows, as the same items in the same
//! 25-item `BatchWriteItem` requests, with `K` requests in flight, to a fresh items table; no
//! file, no validation, no guard, no bookkeeping. Both use the items client the processor is
//! built with (SDK retries disabled). The figure is handler / ceiling: how much of what the
//! table gives one job at `K` in flight the handler gets (the target is 0.8 or more).
//!
//! `K` = 1 (one write at a time), 2 (the default) and 4, handler and ceiling interleaved, in
//! alternating order, [`REPETITIONS`] times; the table shows medians. The ratio is the median of
//! each repetition's ratio, so load that comes and goes on the machine cancels out.
//!
//! Run with the emulator up: `eval "$(make -s emulator-env)"; cargo bench -p import-tests
//! --bench job_throughput`. Prints a markdown table and writes the figures as JSON to
//! `BENCH_DIR` (as `job_throughput.json`), or else to `target/bench/job_throughput.json`.

use std::time::{Duration, Instant, SystemTime};

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, Select, WriteRequest};
use aws_sdk_s3::primitives::ByteStream;
use harness::{
    TestQueue, acknowledge, create_bucket, create_idempotency_table, s3_client, sdk_config,
};
use import_processor::{BATCH_SIZE, DynamoDbItems, Parts, Row};
use import_tests::{create_imports_table, create_items_table, processor_config};
use imports::{
    DynamoDbImports, ImportFormat, ImportId, ImportJob, ImportRecord, ImportStatus, ImportStore,
    ObjectKey,
};
use queue_worker::job::{JobQueue, SqsJobQueue};
use serde_json::json;
use tokio::task::JoinSet;

/// Rows of the imported file (all valid, every SKU once).
const ROWS: usize = 20_000;
/// Item writes in flight measured: the old sequential writer, the default, and more.
const IN_FLIGHT: [usize; 3] = [1, 2, 4];
/// Repetitions of every measurement.
const REPETITIONS: usize = 5;
/// The handler's share of the ceiling this benchmark checks for.
const TARGET_RATIO: f64 = 0.8;
/// Rounds of resending unprocessed items before the ceiling gives up.
const UNPROCESSED_ROUNDS: usize = 5;

/// What both contenders share: clients, the uploaded file and the processor's other resources.
struct Bench {
    config: SdkConfig,
    dynamodb: aws_sdk_dynamodb::Client,
    /// The items table's client, built as the processor builds it (no SDK retries).
    items: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    bucket: String,
    key: ObjectKey,
    imports_table: String,
    guard_table: String,
    queue: TestQueue,
    dlq: TestQueue,
    rows: Vec<Row>,
}

fn rows() -> Vec<Row> {
    (0..ROWS as u64)
        .map(|i| Row {
            sku: format!("SKU-{i:06}"),
            name: format!("Item number {i} of the throughput file"),
            quantity: i % 1000,
            price_cents: 99 + 100 * (i % 500),
        })
        .collect()
}

fn csv(rows: &[Row]) -> Vec<u8> {
    let mut csv = String::from("sku,name,quantity,price\n");
    for row in rows {
        csv.push_str(&format!(
            "{},{},{},{}\n",
            row.sku,
            row.name,
            row.quantity,
            row.price()
        ));
    }
    csv.into_bytes()
}

/// The item the processor writes for `row`.
fn put(import_id: &str, imported_at: &str, row: &Row) -> WriteRequest {
    let item = [
        ("sku", AttributeValue::S(row.sku.clone())),
        ("name", AttributeValue::S(row.name.clone())),
        ("quantity", AttributeValue::N(row.quantity.to_string())),
        ("price", AttributeValue::N(row.price())),
        ("import_id", AttributeValue::S(import_id.to_owned())),
        ("imported_at", AttributeValue::N(imported_at.to_owned())),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    let put = PutRequest::builder()
        .set_item(Some(item))
        .build()
        .expect("a put request with an item is complete");
    WriteRequest::builder().put_request(put).build()
}

impl Bench {
    async fn set_up() -> Self {
        let config = sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let items = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&config)
                .retry_config(RetryConfig::disabled())
                .build(),
        );
        let sqs = aws_sdk_sqs::Client::new(&config);
        let s3 = s3_client(&config);
        let bucket = create_bucket(&s3, "throughput").await;
        let rows = rows();
        let key = ObjectKey::parse("uploads/throughput.csv", "uploads/").unwrap();
        s3.put_object()
            .bucket(&bucket)
            .key(key.as_str())
            .body(ByteStream::from(csv(&rows)))
            .send()
            .await
            .unwrap();
        Self {
            imports_table: create_imports_table(&dynamodb, "imports").await,
            guard_table: create_idempotency_table(&dynamodb, "guard").await,
            queue: TestQueue::create(&sqs, "jobs", &[]).await,
            dlq: TestQueue::create(&sqs, "dlq", &[]).await,
            config,
            dynamodb,
            items,
            sqs,
            bucket,
            key,
            rows,
        }
    }

    fn imports(&self) -> DynamoDbImports {
        DynamoDbImports::new(self.dynamodb.clone(), &self.imports_table)
    }

    /// Imports the file as a new import through the real processor, `in_flight` item writes at
    /// once, into a fresh items table. Times `process` alone.
    async fn handler(&self, in_flight: usize) -> Duration {
        let items_table = create_items_table(&self.dynamodb, "items").await;
        let id = ImportId::generate();
        let imports = self.imports();
        imports
            .create(&ImportRecord::queued(
                id,
                self.key.clone(),
                ImportFormat::Csv,
                "bench".into(),
                imports::Principal::anonymous(),
                SystemTime::now(),
            ))
            .await
            .unwrap();
        SqsJobQueue::new(self.sqs.clone(), &self.queue.url)
            .send(&ImportJob::new(id, &self.key, ImportFormat::Csv), None)
            .await
            .unwrap();
        let event = self
            .queue
            .receive_event(&self.sqs, 1, Duration::from_secs(2))
            .await;
        assert_eq!(event.records.len(), 1, "the job is received");

        let in_flight = in_flight.to_string();
        let config = processor_config(
            &[
                ("IdempotencyTable", &self.guard_table),
                ("ImportsTable", &self.imports_table),
                ("ItemsTable", &items_table),
                ("UploadBucket", &self.bucket),
                ("JobQueue", &self.queue.url),
                ("DeadLetterQueue", &self.dlq.url),
            ],
            &[
                ("IDEMPOTENCY_RETENTION_SECONDS", "3600"),
                ("IDEMPOTENCY_LEASE_MARGIN_SECONDS", "10"),
                ("IDEMPOTENCY_MAX_LEASE_SECONDS", "910"),
                ("BATCH_CONCURRENCY", "1"),
                ("BATCH_DEADLINE_MARGIN_MS", "5000"),
                ("RETRY_BACKOFF_BASE_SECONDS", "0"),
                ("MAX_OBJECT_BYTES", "67108864"),
                ("ITEM_WRITES_IN_FLIGHT", &in_flight),
                ("DOWNSTREAM_TIMEOUT_MS", "30000"),
                ("DOWNSTREAM_MAX_ATTEMPTS", "3"),
                ("DOWNSTREAM_RETRY_BASE_MS", "100"),
                ("CIRCUIT_FAILURE_THRESHOLD", "5"),
                ("CIRCUIT_OPEN_SECONDS", "30"),
            ],
        );
        let Parts {
            guard,
            source,
            imports: records,
            jobs,
            queue,
            config,
            ..
        } = Parts::new(&config, &self.config);
        let processor = Parts {
            guard,
            source,
            // The ceiling's client: built as the processor builds it (no SDK retries).
            writer: DynamoDbItems::new(self.items.clone(), &items_table),
            imports: records,
            jobs,
            queue,
            config,
        }
        .build();

        let started = Instant::now();
        let outcome = processor
            .process(&event, SystemTime::now() + Duration::from_secs(900))
            .await;
        let elapsed = started.elapsed();

        let response = outcome.result.expect("the batch succeeds");
        assert!(response.batch_item_failures.is_empty(), "the job succeeds");
        acknowledge(&self.sqs, &self.queue, &event, &response).await;
        let record = imports.get(id).await.unwrap().expect("the import record");
        assert_eq!(record.status, ImportStatus::Completed);
        assert_eq!(record.rows_written, Some(ROWS as u64));
        assert!(
            record.chunks.is_none_or(|chunks| chunks == 1),
            "the job finished in one chunk"
        );
        self.check_and_drop(&items_table).await;
        elapsed
    }

    /// Writes the same items with `in_flight` plain `BatchWriteItem` requests at once into a
    /// fresh items table. The requests are built before the clock starts.
    async fn ceiling(&self, in_flight: usize) -> Duration {
        let items_table = create_items_table(&self.dynamodb, "items").await;
        let id = ImportId::generate().to_string();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            .to_string();
        let batches: Vec<Vec<WriteRequest>> = self
            .rows
            .chunks(BATCH_SIZE)
            .map(|rows| rows.iter().map(|row| put(&id, &now, row)).collect())
            .collect();

        let started = Instant::now();
        let mut writes = JoinSet::new();
        for batch in batches {
            if writes.len() == in_flight {
                writes.join_next().await.expect("a write").expect("writes");
            }
            writes.spawn(write(self.items.clone(), items_table.clone(), batch));
        }
        while let Some(written) = writes.join_next().await {
            written.expect("writes");
        }
        let elapsed = started.elapsed();

        self.check_and_drop(&items_table).await;
        elapsed
    }

    /// Checks that `table` holds every row, then deletes it (the emulator keeps tables in
    /// memory).
    async fn check_and_drop(&self, table: &str) {
        let mut count = 0;
        let mut start = None;
        loop {
            let page = self
                .dynamodb
                .scan()
                .table_name(table)
                .select(Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            count += usize::try_from(page.count).unwrap();
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        assert_eq!(count, ROWS, "every row is in {table}");
        self.dynamodb
            .delete_table()
            .table_name(table)
            .send()
            .await
            .unwrap();
    }
}

/// One `BatchWriteItem`, resending unprocessed items at once until none are left.
async fn write(client: aws_sdk_dynamodb::Client, table: String, batch: Vec<WriteRequest>) {
    let mut pending = batch;
    for _ in 0..=UNPROCESSED_ROUNDS {
        let output = client
            .batch_write_item()
            .request_items(&table, pending)
            .send()
            .await
            .unwrap_or_else(|e| panic!("BatchWriteItem: {e:?}"));
        pending = output
            .unprocessed_items
            .and_then(|mut items| items.remove(&table))
            .unwrap_or_default();
        if pending.is_empty() {
            return;
        }
    }
    panic!("{} items still unprocessed", pending.len());
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    let middle = samples.len() / 2;
    if samples.len() % 2 == 1 {
        samples[middle]
    } else {
        (samples[middle - 1] + samples[middle]) / 2.0
    }
}

fn rows_per_second(elapsed: Duration) -> f64 {
    ROWS as f64 / elapsed.as_secs_f64()
}

/// The samples of one `K`.
#[derive(Default)]
struct Samples {
    handler: Vec<f64>,
    ceiling: Vec<f64>,
}

impl Samples {
    fn ratios(&self) -> Vec<f64> {
        self.handler
            .iter()
            .zip(&self.ceiling)
            .map(|(handler, ceiling)| handler / ceiling)
            .collect()
    }
}

#[tokio::main]
async fn main() {
    let bench = Bench::set_up().await;
    let mut samples: Vec<Samples> = IN_FLIGHT.iter().map(|_| Samples::default()).collect();
    for repetition in 0..REPETITIONS {
        for (k, samples) in IN_FLIGHT.iter().zip(&mut samples) {
            let (handler, ceiling) = if repetition % 2 == 0 {
                let handler = bench.handler(*k).await;
                (handler, bench.ceiling(*k).await)
            } else {
                let ceiling = bench.ceiling(*k).await;
                (bench.handler(*k).await, ceiling)
            };
            samples.handler.push(rows_per_second(handler));
            samples.ceiling.push(rows_per_second(ceiling));
            eprintln!(
                "repetition {}/{REPETITIONS}, K = {k}: handler {:.0} rows/s, ceiling {:.0} rows/s",
                repetition + 1,
                rows_per_second(handler),
                rows_per_second(ceiling)
            );
        }
    }

    println!(
        "job_throughput: one job of {ROWS} rows against the emulator, medians of {REPETITIONS} \
         interleaved repetitions (ratio: median of each repetition's handler / ceiling; target \
         >= {TARGET_RATIO})\n"
    );
    println!("| K (writes in flight) | handler rows/s | ceiling rows/s | handler / ceiling |");
    println!("|---:|---:|---:|---:|");
    let mut results = Vec::new();
    for (k, samples) in IN_FLIGHT.iter().zip(&samples) {
        let handler = median(samples.handler.clone());
        let ceiling = median(samples.ceiling.clone());
        let ratio = median(samples.ratios());
        println!("| {k} | {handler:.0} | {ceiling:.0} | {ratio:.2} |");
        results.push(json!({
            "writes_in_flight": k,
            "handler_rows_per_s": handler,
            "ceiling_rows_per_s": ceiling,
            "ratio": ratio,
            "meets_target": ratio >= TARGET_RATIO,
            "handler_samples": samples.handler,
            "ceiling_samples": samples.ceiling,
        }));
    }

    let path = std::env::var_os("BENCH_DIR")
        .filter(|dir| !dir.is_empty())
        .map(|dir| {
            std::path::PathBuf::from(dir)
                .join("job_throughput.json")
                .into_os_string()
        })
        .filter(|p| !p.is_empty())
        .map_or_else(
            || {
                concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../../target/bench/job_throughput.json"
                )
                .into()
            },
            std::path::PathBuf::from,
        );
    let report = json!({
        "rows": ROWS,
        "batch_size": BATCH_SIZE,
        "repetitions": REPETITIONS,
        "target_ratio": TARGET_RATIO,
        "results": results,
    });
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    }
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap() + "\n")
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    println!("\nwrote {}", path.display());
}
