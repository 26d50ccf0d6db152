//! `make demo`: a burst of imports through the whole local pipeline, watched live, then checked.
//!
//! Every accepted import must end `COMPLETED` exactly once, or `FAILED` with its job parked in
//! the dead-letter queue with a reason. Anything else fails the demo.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use aws_sdk_s3::primitives::ByteStream;
use comfy_table::{Table, presets::UTF8_FULL};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use shared::batch::RecordStatus;
use tokio::sync::Semaphore;

use crate::pipeline::Pipeline;

/// What the demo sends.
#[derive(Debug, Clone, Copy)]
pub struct Burst {
    /// Import requests in the burst.
    pub imports: usize,
    /// Rows per generated file.
    pub rows: usize,
    /// Every this-many-th request repeats an earlier one (same key and body).
    pub repeat_every: usize,
    /// Every this-many-th import names a poison file (missing, or garbage bytes).
    pub poison_every: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Give up waiting for the queue to drain after this long.
    pub drain_timeout: Duration,
    /// Maximum concurrency of the event source mapping (for the report).
    pub maximum_concurrency: usize,
}

/// One import the burst created.
#[derive(Debug, Clone)]
struct Accepted {
    id: String,
    poison: bool,
}

/// Runs the demo on a started pipeline; `Ok` when every check passed. With `report`, also
/// writes the outcome there as JSON (for `make bench`'s drain-time curve).
pub async fn run(
    pipeline: &Pipeline,
    burst: Burst,
    report: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let bucket = pipeline
        .resources
        .reference("UploadBucket")
        .context("the upload bucket")?;
    println!("generating and uploading sample files...");
    let plan = upload_files(pipeline, bucket, burst).await?;

    println!(
        "firing {} imports at {} ...",
        burst.imports, pipeline.base_url
    );
    let started = Instant::now();
    let (accepted, replays) = fire(pipeline, &plan, burst).await?;
    let fired_in = started.elapsed();
    let distinct: HashSet<&str> = accepted.iter().map(|a| a.id.as_str()).collect();
    println!(
        "{} requests in {:.1} s: {} imports accepted, {} replays answered with the same import",
        burst.imports,
        fired_in.as_secs_f64(),
        distinct.len(),
        replays
    );

    let drained_in = watch(
        pipeline,
        distinct.len() as u64,
        burst.drain_timeout,
        started,
    )
    .await?;
    let outcome = check(pipeline, &accepted, replays, drained_in).await;
    if let Some(path) = report {
        let summary = json!({
            "requests": burst.imports,
            "imports": accepted.len(),
            "rows_per_file": burst.rows,
            "maximum_concurrency": burst.maximum_concurrency,
            "drain_seconds": drained_in.as_secs_f64(),
            "imports_per_second": accepted.len() as f64 / drained_in.as_secs_f64(),
            "check_passed": outcome.is_ok(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    outcome
}

/// The object key and body of each import request: `(key, poison)` per request index.
async fn upload_files(
    pipeline: &Pipeline,
    bucket: &str,
    burst: Burst,
) -> anyhow::Result<Vec<(String, bool)>> {
    let uploads = Arc::new(Semaphore::new(16));
    let mut plan = Vec::with_capacity(burst.imports);
    let mut tasks = Vec::new();
    for i in 0..burst.imports {
        // Poison lands mid-way between repeats, so a repeat never hides it.
        let poison = burst.poison_every > 0 && i % burst.poison_every == burst.poison_every / 2;
        let key = format!("uploads/demo/file-{i:05}.csv");
        plan.push((key.clone(), poison));
        // Poison: every other one is missing, the rest are garbage bytes.
        let body = match (poison, i / burst.poison_every.max(1) % 2) {
            (true, 0) => continue,
            (true, _) => vec![0xff, 0xfe, 0x00, 0x81, b'\n'],
            (false, _) => csv(i, burst.rows),
        };
        let (s3, bucket, permit) = (
            pipeline.clients.s3.clone(),
            bucket.to_owned(),
            Arc::clone(&uploads).acquire_owned().await?,
        );
        tasks.push(tokio::spawn(async move {
            let result = s3
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(ByteStream::from(body))
                .send()
                .await;
            drop(permit);
            result
        }));
    }
    for task in tasks {
        task.await?.context("uploading a sample file")?;
    }
    Ok(plan)
}

fn csv(file: usize, rows: usize) -> Vec<u8> {
    let mut csv = String::from("sku,name,quantity,price\n");
    for row in 0..rows {
        csv.push_str(&format!(
            "D{file}-{row},Demo item {row} of file {file},{row},{}.{:02}\n",
            row % 50,
            row % 100
        ));
    }
    csv.into_bytes()
}

/// Sends the burst; returns the accepted imports (one per distinct key) and the replay count.
async fn fire(
    pipeline: &Pipeline,
    plan: &[(String, bool)],
    burst: Burst,
) -> anyhow::Result<(Vec<Accepted>, usize)> {
    let http = reqwest::Client::new();
    let slots = Arc::new(Semaphore::new(burst.concurrency.max(1)));
    let mut tasks = Vec::new();
    for (i, (key, poison)) in plan.iter().enumerate() {
        // Every repeat_every-th request repeats the one before it, as a client retry would.
        let source = if burst.repeat_every > 0
            && i % burst.repeat_every == burst.repeat_every - 1
            && i > 0
        {
            i - 1
        } else {
            i
        };
        let (key, poison) = if source == i {
            (key.clone(), *poison)
        } else {
            plan[source].clone()
        };
        let request = http
            .post(format!("{}/imports", pipeline.base_url))
            .header("content-type", "application/json")
            .header("idempotency-key", format!("demo-{source}"))
            .body(json!({ "objectKey": key }).to_string());
        let permit = Arc::clone(&slots).acquire_owned().await?;
        tasks.push(tokio::spawn(async move {
            let response = request.send().await;
            drop(permit);
            let response = response?;
            let status = response.status().as_u16();
            let replayed = response.headers().contains_key("idempotent-replayed");
            let body: Value = response.json().await?;
            anyhow::Ok((status, replayed, body, poison))
        }));
    }
    let mut accepted = BTreeMap::new();
    let mut replays = 0;
    for task in tasks {
        let (status, replayed, body, poison) = task.await??;
        ensure!(
            matches!(status, 200 | 202),
            "an import request failed with {status}: {body}"
        );
        if replayed {
            replays += 1;
        }
        let id = body["importId"]
            .as_str()
            .context("importId in the response")?
            .to_owned();
        accepted
            .entry(id.clone())
            .or_insert(Accepted { id, poison });
    }
    Ok((accepted.into_values().collect(), replays))
}

/// Shows progress until every accepted import is processed or parked and the queue is empty.
async fn watch(
    pipeline: &Pipeline,
    expected: u64,
    timeout: Duration,
    started: Instant,
) -> anyhow::Result<Duration> {
    // A terminal gets a live bar; a log (CI) gets a line every few seconds.
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last_line = Instant::now();
    let bar = ProgressBar::new(expected);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40.cyan/blue}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    loop {
        let stats = &pipeline.stats;
        let done = stats.count(RecordStatus::Processed) + stats.count(RecordStatus::Parked);
        let (waiting, in_flight) = pipeline.queue_depth("JobQueue").await?;
        let mut message = format!(
            "queued {waiting} | in flight {in_flight} | completed {} | duplicates {} | retried {} | parked {}",
            stats.count(RecordStatus::Processed),
            stats.count(RecordStatus::Duplicate),
            stats.count(RecordStatus::Retried),
            stats.count(RecordStatus::Parked),
        );
        if stats.faults_injected() > 0 {
            message.push_str(&format!(" | faults {}", stats.faults_injected()));
        }
        bar.set_position(done.min(expected));
        if !interactive && last_line.elapsed() >= Duration::from_secs(3) {
            println!(
                "{:>5.1} s  {done}/{expected}  {message}",
                started.elapsed().as_secs_f64()
            );
            last_line = Instant::now();
        }
        bar.set_message(message);
        if done >= expected && waiting == 0 && in_flight == 0 {
            bar.finish();
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bar.abandon();
            bail!("the queue did not drain within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Checks every import's outcome through the API and the DLQ, and prints the summary.
async fn check(
    pipeline: &Pipeline,
    accepted: &[Accepted],
    replays: usize,
    drained_in: Duration,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let mut problems = Vec::new();
    let (mut completed, mut failed) = (0u64, 0u64);
    for import in accepted {
        let view: Value = http
            .get(format!("{}/imports/{}", pipeline.base_url, import.id))
            .send()
            .await?
            .json()
            .await?;
        match (view["status"].as_str(), import.poison) {
            (Some("COMPLETED"), false) => completed += 1,
            (Some("FAILED"), true) if view["error"].is_string() => failed += 1,
            (status, poison) => problems.push(format!(
                "import {} (poison: {poison}) ended {status:?}",
                import.id
            )),
        }
    }
    let parked = parked_import_ids(pipeline).await?;
    for import in accepted.iter().filter(|a| a.poison) {
        if !parked.contains(&import.id) {
            problems.push(format!(
                "poison import {} is not in the dead-letter queue",
                import.id
            ));
        }
    }
    let stats = &pipeline.stats;
    let processed = stats.count(RecordStatus::Processed);
    if processed != completed {
        problems.push(format!(
            "{processed} jobs processed for {completed} completed imports: not exactly once"
        ));
    }

    let (invocations, failed_invocations) = stats.invocations();
    let mut table = Table::new();
    table.load_style(UTF8_FULL).set_header(["", "count"]);
    let rows: [(&str, String); 10] = [
        ("imports accepted", accepted.len().to_string()),
        (
            "replayed requests (same Idempotency-Key)",
            replays.to_string(),
        ),
        ("completed, each exactly once", completed.to_string()),
        (
            "failed, parked in the DLQ with a reason",
            failed.to_string(),
        ),
        (
            "duplicate deliveries acknowledged",
            stats.count(RecordStatus::Duplicate).to_string(),
        ),
        (
            "retried records",
            (stats.count(RecordStatus::Retried) + stats.count(RecordStatus::Panicked)).to_string(),
        ),
        (
            "downstream faults injected (flaky mode)",
            stats.faults_injected().to_string(),
        ),
        (
            "invocations (whole-batch failures)",
            format!("{invocations} ({failed_invocations})"),
        ),
        ("drain time", format!("{:.1} s", drained_in.as_secs_f64())),
        (
            "throughput",
            format!(
                "{:.0} imports/s",
                accepted.len() as f64 / drained_in.as_secs_f64()
            ),
        ),
    ];
    for (name, value) in rows {
        table.add_row([name.to_owned(), value]);
    }
    println!("{table}");
    if problems.is_empty() {
        println!(
            "check passed: every accepted import completed exactly once or failed with its reason in the DLQ"
        );
        Ok(())
    } else {
        for problem in &problems {
            eprintln!("check failed: {problem}");
        }
        bail!("{} problems", problems.len())
    }
}

/// The import ids of the messages parked in the dead-letter queue. Messages are held invisible
/// while reading, so each is seen once, then made visible again: the queue is left as it was.
async fn parked_import_ids(pipeline: &Pipeline) -> anyhow::Result<HashSet<String>> {
    let url = pipeline
        .resources
        .reference("DeadLetterQueue")
        .context("the DLQ")?;
    let sqs = &pipeline.clients.sqs;
    let mut ids = HashSet::new();
    let mut receipts = Vec::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .visibility_timeout(60)
            .send()
            .await?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for message in &messages {
            if let Some(id) = message
                .message_attributes()
                .and_then(|a| a.get("import_id"))
                .and_then(|v| v.string_value())
            {
                ids.insert(id.to_owned());
            }
            receipts.extend(message.receipt_handle().map(str::to_owned));
        }
    }
    for receipt in receipts {
        sqs.change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await?;
    }
    Ok(ids)
}
