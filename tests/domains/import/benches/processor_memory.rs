//! Peak memory of the processor importing a batch of 10 jobs of 1 MiB CSV files each, through
//! the real handler, S3 and DynamoDB clients against the emulator. Objects are streamed, so the
//! peak should not grow with file size.
//!
//! Run with the emulator up: `eval "$(make -s emulator-env)"; cargo bench -p import-tests
//! --bench processor_memory`. Prints the process's peak resident set (VmHWM) before and after;
//! with `BENCH_DIR` (as `memory.json`) set, also writes the figures there as JSON.

use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::primitives::ByteStream;
use harness::{TestQueue, create_bucket, create_idempotency_table, s3_client, sdk_config};
use import_processor::Parts;
use import_tests::{create_imports_table, create_items_table, processor_config};
use imports::{
    DynamoDbImports, ImportFormat, ImportId, ImportJob, ImportRecord, ImportStore, ObjectKey,
};
use queue_worker::job::{JobQueue, SqsJobQueue};

const FILES: usize = 10;
const FILE_BYTES: usize = 1024 * 1024;

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

fn csv_of_about(bytes: usize, prefix: usize) -> Vec<u8> {
    let mut csv = String::from("sku,name,quantity,price\n");
    let mut i = 0;
    while csv.len() < bytes {
        csv.push_str(&format!(
            "F{prefix}-{i},Item number {i} of a large file,{i},{}.99\n",
            i % 1000
        ));
        i += 1;
    }
    csv.into_bytes()
}

#[tokio::main]
async fn main() {
    let config = sdk_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let s3 = s3_client(&config);
    let bucket = create_bucket(&s3, "memory").await;
    let items_table = create_items_table(&dynamodb, "items").await;
    let imports_table = create_imports_table(&dynamodb, "imports").await;
    let imports = DynamoDbImports::new(dynamodb.clone(), &imports_table);
    let guard_table = create_idempotency_table(&dynamodb, "guard").await;
    let queue = TestQueue::create(&sqs, "jobs", &[]).await;
    let dlq = TestQueue::create(&sqs, "dlq", &[]).await;

    let mut rows = 0;
    for file in 0..FILES {
        let contents = csv_of_about(FILE_BYTES, file);
        rows += contents.iter().filter(|b| **b == b'\n').count() - 1;
        let key = ObjectKey::parse(&format!("uploads/big-{file}.csv"), "uploads/").unwrap();
        s3.put_object()
            .bucket(&bucket)
            .key(key.as_str())
            .body(ByteStream::from(contents))
            .send()
            .await
            .unwrap();
        let id = ImportId::generate();
        imports
            .create(&ImportRecord::queued(
                id,
                key.clone(),
                ImportFormat::Csv,
                "bench".into(),
                imports::Principal::anonymous(),
                SystemTime::now(),
            ))
            .await
            .unwrap();
        SqsJobQueue::new(sqs.clone(), &queue.url)
            .send(&ImportJob::new(id, &key, ImportFormat::Csv), None)
            .await
            .unwrap();
    }
    let event = queue.receive_event(&sqs, 10, Duration::from_secs(2)).await;
    assert_eq!(event.records.len(), FILES);

    // The production processor, every seam its own.
    let processor = Parts::new(
        &processor_config(
            &[
                ("IdempotencyTable", &guard_table),
                ("ImportsTable", &imports_table),
                ("ItemsTable", &items_table),
                ("UploadBucket", &bucket),
                ("JobQueue", &queue.url),
                ("DeadLetterQueue", &dlq.url),
            ],
            &[
                ("IDEMPOTENCY_RETENTION_SECONDS", "3600"),
                ("IDEMPOTENCY_LEASE_MARGIN_SECONDS", "10"),
                ("IDEMPOTENCY_MAX_LEASE_SECONDS", "900"),
                ("BATCH_CONCURRENCY", "10"),
                ("BATCH_DEADLINE_MARGIN_MS", "5000"),
                ("RETRY_BACKOFF_BASE_SECONDS", "0"),
                ("MAX_OBJECT_BYTES", "67108864"),
                ("DOWNSTREAM_TIMEOUT_MS", "30000"),
                ("DOWNSTREAM_MAX_ATTEMPTS", "3"),
                ("DOWNSTREAM_RETRY_BASE_MS", "100"),
                ("CIRCUIT_FAILURE_THRESHOLD", "5"),
                ("CIRCUIT_OPEN_SECONDS", "30"),
            ],
        ),
        &config,
    )
    .build();

    let before = peak_rss_kib();
    let started = Instant::now();
    let outcome = processor
        .process(&event, SystemTime::now() + Duration::from_secs(900))
        .await;
    let elapsed = started.elapsed();
    let after = peak_rss_kib();
    let response = outcome.result.expect("the batch succeeds");
    assert!(response.batch_item_failures.is_empty());

    println!(
        "processor_memory: {FILES} files x {} KiB, {rows} rows",
        FILE_BYTES / 1024
    );
    println!(
        "peak RSS before the batch: {:.1} MiB",
        before as f64 / 1024.0
    );
    println!(
        "peak RSS after the batch:  {:.1} MiB",
        after as f64 / 1024.0
    );
    println!(
        "batch time against the emulator: {:.1} s ({:.0} rows/s)",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64()
    );

    if let Some(path) = std::env::var_os("BENCH_DIR")
        .filter(|dir| !dir.is_empty())
        .map(|dir| {
            std::path::PathBuf::from(dir)
                .join("memory.json")
                .into_os_string()
        })
        .filter(|p| !p.is_empty())
    {
        let report = serde_json::json!({
            "files": FILES,
            "file_bytes": FILE_BYTES,
            "rows": rows,
            "rss_before_mib": before as f64 / 1024.0,
            "peak_rss_mib": after as f64 / 1024.0,
            "seconds": elapsed.as_secs_f64(),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap() + "\n")
            .unwrap_or_else(|e| panic!("write {}: {e}", path.to_string_lossy()));
        println!("wrote {}", path.to_string_lossy());
    }
}
