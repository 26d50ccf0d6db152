//! `make demo`: a burst of imports through the whole local pipeline, watched live, then checked.
//!
//! Every accepted import must end `COMPLETED` exactly once with exactly its file's rows, or
//! `FAILED` with its job parked in the dead-letter queue with a reason. Anything else fails the
//! demo. The files repeat each SKU with changing values ([`crate::sample`]): every SKU of every
//! completed import is read back from the items table and must hold its file's last valid row,
//! so an older value written over a newer one fails the demo too.
//!
//! A few files of the burst are large. At the demo's short function timeout
//! ([`FUNCTION_TIMEOUT`]) each outlasts an invocation: it is checkpointed and continued in new
//! jobs, chunk after chunk. The check asserts that each large import really took several chunks
//! (in one chunk it would prove nothing about continuing) and that every chunk of every import
//! was processed exactly once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use comfy_table::{Table, presets::UTF8_FULL};
use indicatif::{ProgressBar, ProgressStyle};
use queue_worker::batch::RecordStatus;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::pipeline::Pipeline;
use crate::sample::{self, Expected, SampleFile};

/// The processor's function timeout in the demo unless overridden: short, so that a large file
/// outlasts an invocation while a small one finishes in one. With the template's
/// `BATCH_DEADLINE_MARGIN_MS` of 3 s, a chunk works for about 3 s.
pub const FUNCTION_TIMEOUT: Duration = Duration::from_secs(6);

/// Up to this many rows written, the check also scans the items table and counts every
/// import's items (the values are read back whatever the size).
const ITEMS_CHECK_MAX_ROWS: u64 = 100_000;

/// In a large file, every this-many-th row is invalid: rejections are carried across chunks too.
const LARGE_FILE_BAD_ROW_EVERY: usize = 1000;

/// What the demo sends.
#[derive(Debug, Clone, Copy)]
pub struct Burst {
    /// Import requests in the burst.
    pub imports: usize,
    /// Rows per small file.
    pub rows: usize,
    /// Large files among the imports, spread over the burst, the first import being one.
    pub large_files: usize,
    /// Rows per large file: enough for several chunks at the function timeout.
    pub large_rows: usize,
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

impl Burst {
    /// A burst of `imports` requests as the demo and the chaos soak send them: every 10th
    /// request a client retry, every 50th import a poison file, 32 requests in flight.
    pub fn new(
        imports: usize,
        (rows, large_files, large_rows): (usize, usize, usize),
        drain_timeout: Duration,
        maximum_concurrency: usize,
    ) -> Self {
        Self {
            imports,
            rows,
            large_files,
            large_rows,
            repeat_every: 10,
            poison_every: 50,
            concurrency: 32,
            drain_timeout,
            maximum_concurrency,
        }
    }
}

/// What a sample file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A few rows: one chunk.
    Small,
    /// Many rows: several chunks.
    Large,
    /// Missing or garbage bytes: the import fails and its job is parked.
    Poison,
}

/// One request of the burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Request {
    /// The request whose key and body this one sends: itself, or the one before it for a
    /// client retry.
    source: usize,
    /// The file it names.
    kind: Kind,
}

/// A sample file and what importing it must give.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) key: String,
    pub(crate) kind: Kind,
    /// The generated content (none for poison).
    pub(crate) contents: Option<SampleFile>,
    /// Valid rows: what the import must write.
    pub(crate) valid: u64,
    /// Invalid rows: what the import must reject.
    pub(crate) invalid: u64,
}

/// One import the burst created, and its file.
#[derive(Debug, Clone)]
pub(crate) struct Accepted {
    pub(crate) id: String,
    pub(crate) sample: Sample,
}

/// What the completed imports add up to.
#[derive(Debug, Default)]
struct Totals {
    rows_written: u64,
    chunks: u64,
    /// Imports that took more than one chunk.
    continued: u64,
    /// Imports of large files.
    large: u64,
    most_chunks: u64,
    /// A completed import that took the most chunks, to show its trace.
    most_chunked: Option<String>,
    /// SKUs of completed imports read back and compared.
    skus_checked: u64,
}

/// Runs the demo on a started pipeline; `Ok` when every check passed. With `report`, also
/// writes the outcome there as JSON (for `make bench`'s drain-time curve).
pub async fn run(pipeline: &Pipeline, burst: Burst, report: Option<&Path>) -> anyhow::Result<()> {
    let requests = plan(&burst);
    println!("generating and uploading sample files...");
    let samples = upload_files(pipeline, &requests, burst).await?;

    println!(
        "firing {} imports at {} (function timeout {} s) ...",
        burst.imports,
        pipeline.base_url,
        pipeline.function_timeout.as_secs_f64()
    );
    let started = Instant::now();
    let (accepted, replays) = fire(pipeline, &requests, &samples, burst).await?;
    let fired_in = started.elapsed();
    println!(
        "{} requests in {:.1} s: {} imports accepted, {} replays answered with the same import",
        burst.imports,
        fired_in.as_secs_f64(),
        accepted.len(),
        replays
    );

    let drained_in = watch(
        pipeline,
        accepted.len() as u64,
        burst.drain_timeout,
        started,
    )
    .await?;
    let (problems, totals) = check(pipeline, &accepted, replays, drained_in).await?;
    if let Some(path) = report {
        let summary = json!({
            "domain": "import",
            "requests": burst.imports,
            "imports": accepted.len(),
            "rows_per_file": burst.rows,
            "large_files": totals.large,
            "rows_per_large_file": burst.large_rows,
            "maximum_concurrency": burst.maximum_concurrency,
            "function_timeout_seconds": pipeline.function_timeout.as_secs_f64(),
            "drain_seconds": drained_in.as_secs_f64(),
            "imports_per_second": accepted.len() as f64 / drained_in.as_secs_f64(),
            "rows_written": totals.rows_written,
            "skus_checked": totals.skus_checked,
            "chunks": totals.chunks,
            "continued_imports": totals.continued,
            "invocations": pipeline.stats.invocations().0,
            "check_passed": problems.is_empty(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(id) = &totals.most_chunked {
        println!("the trace of the import that took the most chunks: make trace ID={id}");
    }
    if problems.is_empty() {
        println!(
            "check passed: every accepted import completed exactly once with its rows and every \
             SKU holding its file's last value, or failed with its reason in the DLQ; every large \
             import took several chunks"
        );
        Ok(())
    } else {
        for problem in &problems {
            eprintln!("check failed: {problem}");
        }
        bail!("{} problems", problems.len())
    }
}

/// What each request of the burst sends.
pub(crate) fn plan(burst: &Burst) -> Vec<Request> {
    let mut requests: Vec<Request> = (0..burst.imports)
        .map(|i| {
            // Every repeat_every-th request repeats the one before it, as a client retry would.
            let repeat =
                i > 0 && burst.repeat_every > 0 && i % burst.repeat_every == burst.repeat_every - 1;
            // Poison lands mid-way between repeats, so a repeat never hides it.
            let poison = burst.poison_every > 0 && i % burst.poison_every == burst.poison_every / 2;
            Request {
                source: if repeat { i - 1 } else { i },
                kind: if poison { Kind::Poison } else { Kind::Small },
            }
        })
        .collect();
    // Large files take the place of small ones, evenly spread, the first at the start: the
    // k-th is the first small file at or after k/large of the burst (and after the one before).
    let small: Vec<usize> = (0..requests.len())
        .filter(|&i| requests[i].source == i && requests[i].kind == Kind::Small)
        .collect();
    let large = burst.large_files.min(small.len());
    let mut j = 0;
    for k in 0..large {
        let at = k * requests.len() / large;
        j = small
            .partition_point(|&i| i < at)
            .max(j)
            .min(small.len() - (large - k));
        requests[small[j]].kind = Kind::Large;
        j += 1;
    }
    for i in 0..requests.len() {
        requests[i].kind = requests[requests[i].source].kind;
    }
    requests
}

/// Generates and uploads the file of each request that is not a repeat, as a client does: asks
/// the API for an upload URL (`POST /uploads`, a key in the caller's own folder) and `PUT`s the
/// file there. Returns the sample of every request.
pub(crate) async fn upload_files(
    pipeline: &Pipeline,
    requests: &[Request],
    burst: Burst,
) -> anyhow::Result<Vec<Sample>> {
    let http = reqwest::Client::new();
    let uploads = Arc::new(Semaphore::new(16));
    let mut samples: Vec<Sample> = Vec::with_capacity(requests.len());
    let mut tasks = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        if request.source != i {
            samples.push(samples[request.source].clone());
            continue;
        }
        let (key, url) = upload_url(&http, &pipeline.base_url).await?;
        let contents = match request.kind {
            Kind::Poison => None,
            Kind::Small => Some(SampleFile {
                file: i,
                rows: burst.rows,
                bad_every: None,
            }),
            Kind::Large => Some(SampleFile {
                file: i,
                rows: burst.large_rows,
                bad_every: Some(LARGE_FILE_BAD_ROW_EVERY),
            }),
        };
        let (body, valid, invalid) = match contents {
            Some(contents) if request.kind == Kind::Large => {
                let (path, valid, invalid) = large_file(contents)?;
                (Some(Body::File(path)), valid, invalid)
            }
            Some(contents) => {
                let mut bytes = Vec::new();
                let (valid, invalid) = contents.write_csv(&mut bytes)?;
                (Some(Body::Bytes(bytes)), valid, invalid)
            }
            // Poison: every other one is missing, the rest are garbage bytes.
            None if i / burst.poison_every.max(1) % 2 == 0 => (None, 0, 0),
            None => (Some(Body::Bytes(vec![0xff, 0xfe, 0x00, 0x81, b'\n'])), 0, 0),
        };
        samples.push(Sample {
            key: key.clone(),
            kind: request.kind,
            contents,
            valid,
            invalid,
        });
        // Poison: a missing file is a URL never used.
        let Some(body) = body else { continue };
        let (http, permit) = (http.clone(), Arc::clone(&uploads).acquire_owned().await?);
        tasks.push(tokio::spawn(async move {
            let result = upload(&http, &url, &body).await;
            drop(permit);
            if let Body::File(path) = &body {
                let _ = std::fs::remove_file(path);
            }
            result
        }));
    }
    for task in tasks {
        task.await?.context("uploading a sample file")?;
    }
    Ok(samples)
}

/// A sample file's content.
enum Body {
    /// In memory (small files).
    Bytes(Vec<u8>),
    /// In a temporary file, streamed from there and removed after the upload (large files), so
    /// that the runner's memory shows what the processor uses, not the size of the file.
    File(PathBuf),
}

/// A fresh key in the caller's upload folder and its presigned `PUT` URL, from the API.
async fn upload_url(http: &reqwest::Client, base_url: &str) -> anyhow::Result<(String, String)> {
    let response = http
        .post(format!("{base_url}/uploads"))
        .header("content-type", "application/json")
        .body(r#"{"format":"csv"}"#)
        .send()
        .await?;
    let status = response.status();
    let issued: Value = response.json().await?;
    ensure!(
        status.as_u16() == 201,
        "POST /uploads answered {status}: {issued}"
    );
    let field = |name: &str| {
        issued[name]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("{name} in the upload response"))
    };
    Ok((field("objectKey")?, field("uploadUrl")?))
}

/// `PUT`s `body` to the presigned `url`.
async fn upload(http: &reqwest::Client, url: &str, body: &Body) -> anyhow::Result<()> {
    let bytes = match body {
        Body::Bytes(bytes) => bytes.clone(),
        Body::File(path) => tokio::fs::read(path).await?,
    };
    let response = http.put(url).body(bytes).send().await?;
    let status = response.status();
    ensure!(
        status.is_success(),
        "the upload answered {status}: {}",
        response.text().await.unwrap_or_default()
    );
    Ok(())
}

/// Writes a large file to a temporary file; returns its path and its valid and invalid row
/// counts.
fn large_file(contents: SampleFile) -> anyhow::Result<(PathBuf, u64, u64)> {
    let path = std::env::temp_dir().join(format!(
        "local-runner-{}-file-{:05}.csv",
        std::process::id(),
        contents.file
    ));
    let written = std::fs::File::create(&path).and_then(|out| {
        let mut out = std::io::BufWriter::new(out);
        let counts = contents.write_csv(&mut out)?;
        out.flush()?;
        Ok(counts)
    });
    match written {
        Ok((valid, invalid)) => Ok((path, valid, invalid)),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e).with_context(|| format!("writing {}", path.display()))
        }
    }
}

/// Sends the burst; returns the accepted imports (one per distinct key) and the replay count.
pub(crate) async fn fire(
    pipeline: &Pipeline,
    requests: &[Request],
    samples: &[Sample],
    burst: Burst,
) -> anyhow::Result<(Vec<Accepted>, usize)> {
    let http = reqwest::Client::new();
    let slots = Arc::new(Semaphore::new(burst.concurrency.max(1)));
    let mut tasks = Vec::new();
    for (request, sample) in requests.iter().zip(samples) {
        let http_request = http
            .post(format!("{}/imports", pipeline.base_url))
            .header("content-type", "application/json")
            .header("idempotency-key", format!("demo-{}", request.source))
            .body(json!({ "objectKey": sample.key }).to_string());
        let sample = sample.clone();
        let permit = Arc::clone(&slots).acquire_owned().await?;
        tasks.push(tokio::spawn(async move {
            let response = http_request.send().await;
            drop(permit);
            let response = response?;
            let status = response.status().as_u16();
            let replayed = response.headers().contains_key("idempotent-replayed");
            let body: Value = response.json().await?;
            anyhow::Ok((status, replayed, body, sample))
        }));
    }
    let mut accepted = BTreeMap::new();
    let mut replays = 0;
    for task in tasks {
        let (status, replayed, body, sample) = task.await??;
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
            .or_insert(Accepted { id, sample });
    }
    Ok((accepted.into_values().collect(), replays))
}

/// Shows progress until the job queue is empty: then every accepted import is finished.
pub(crate) async fn watch(
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
        // A processed record is one chunk; a chunk that continued did not finish its import.
        // Until its next job is delivered (about a second) the import shows as completed: a
        // display only, the check after the drain reads every import's record.
        let continued = stats.continuations();
        let completed = stats
            .count(RecordStatus::Processed)
            .saturating_sub(continued);
        let done = completed + stats.count(RecordStatus::Parked);
        let depth = pipeline.queue_depth("JobQueue").await?;
        let mut message = format!(
            "queued {} | held back {} | in flight {} | completed {completed} | continued {continued} | duplicates {} | retried {} | parked {}",
            depth.waiting,
            depth.delayed,
            depth.in_flight,
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
        // Every import not finished has a job on the queue, waiting, held back or in flight:
        // the producer queues it before answering, a chunk queues the next one (a stalled
        // chunk's with a delay) and a retried record is made invisible before its message is
        // let go.
        if depth.is_empty() {
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

/// Checks every import's outcome through the API, the items table and the DLQ, and prints the
/// summary. Returns the problems found and the completed imports' totals.
async fn check(
    pipeline: &Pipeline,
    accepted: &[Accepted],
    replays: usize,
    drained_in: Duration,
) -> anyhow::Result<(Vec<String>, Totals)> {
    let http = reqwest::Client::new();
    let mut problems = Vec::new();
    let mut totals = Totals::default();
    let (mut completed, mut failed, mut large_continued) = (0u64, 0u64, 0u64);
    // What each completed import must have left in the items table.
    let mut expected: Vec<(&str, Expected)> = Vec::new();
    for import in accepted {
        let view: Value = http
            .get(format!("{}/imports/{}", pipeline.base_url, import.id))
            .send()
            .await?
            .json()
            .await?;
        let (id, sample) = (import.id.as_str(), &import.sample);
        match (view["status"].as_str(), sample.kind) {
            (Some("COMPLETED"), Kind::Small | Kind::Large) => {
                completed += 1;
                let (written, rejected) =
                    (view["rowsWritten"].as_u64(), view["rowsRejected"].as_u64());
                if written != Some(sample.valid) || rejected != Some(sample.invalid) {
                    problems.push(format!(
                        "import {id} of {} wrote {written:?} rows and rejected {rejected:?}: the file has {} valid and {} invalid",
                        sample.key, sample.valid, sample.invalid
                    ));
                }
                let chunks = view["chunks"].as_u64().unwrap_or(0);
                if chunks == 0 {
                    problems.push(format!("import {id} completed without a chunk count"));
                }
                if sample.kind == Kind::Large {
                    totals.large += 1;
                    if chunks > 1 {
                        large_continued += 1;
                    } else {
                        problems.push(format!(
                            "large import {id} ({} rows) completed in {chunks} chunk, so it \
                             proved nothing about continuing: raise --large-rows or lower \
                             --function-timeout",
                            sample.valid + sample.invalid
                        ));
                    }
                }
                totals.rows_written += written.unwrap_or(0);
                totals.chunks += chunks;
                totals.continued += u64::from(chunks > 1);
                if chunks > totals.most_chunks.max(1) {
                    totals.most_chunked = Some(id.to_owned());
                }
                totals.most_chunks = totals.most_chunks.max(chunks);
                if let Some(contents) = sample.contents {
                    expected.push((id, contents.expected()));
                }
            }
            (Some("FAILED"), Kind::Poison) if view["error"].is_string() => failed += 1,
            (status, kind) => problems.push(format!(
                "import {id} ({kind:?} file {}) ended {status:?}",
                sample.key
            )),
        }
    }
    let items_table = pipeline
        .resources
        .reference("ItemsTable")
        .context("the items table")?;
    let values = sample::check_table(&pipeline.clients.dynamodb, items_table, &expected).await?;
    problems.extend(values.problem());
    totals.skus_checked = values.skus;
    // A file repeats its SKUs: an import leaves one item per SKU with a valid row, fewer than
    // the rows it wrote.
    if totals.rows_written <= ITEMS_CHECK_MAX_ROWS {
        let items = items_per_import(pipeline).await?;
        for (id, expected) in &expected {
            let (found, want) = (items.get(*id).copied().unwrap_or(0), expected.items());
            if found != want {
                problems.push(format!(
                    "import {id} should leave {want} items (one per SKU with a valid row), the items table has {found} of it"
                ));
            }
        }
        let completed: HashSet<&str> = expected.iter().map(|(id, _)| *id).collect();
        let strays: u64 = items
            .iter()
            .filter(|(id, _)| !completed.contains(id.as_str()))
            .map(|(_, count)| count)
            .sum();
        if strays > 0 {
            problems.push(format!(
                "the items table has {strays} items of imports that did not complete"
            ));
        }
    } else {
        println!(
            "items table not scanned for strays: {} rows is over {ITEMS_CHECK_MAX_ROWS}, and a scan of the emulator would take minutes",
            totals.rows_written
        );
    }
    let parked = parked_import_ids(pipeline).await?;
    for import in accepted.iter().filter(|a| a.sample.kind == Kind::Poison) {
        if !parked.contains(&import.id) {
            problems.push(format!(
                "poison import {} is not in the dead-letter queue",
                import.id
            ));
        }
    }
    let stats = &pipeline.stats;
    // Each chunk of a completed import is processed once; redeliveries count as duplicates.
    let processed = stats.count(RecordStatus::Processed);
    if processed != totals.chunks {
        problems.push(format!(
            "{processed} chunks processed for the {} chunks of the completed imports: not exactly once",
            totals.chunks
        ));
    }

    let timed_out = stats.timed_out_invocations();
    if timed_out > 0 {
        problems.push(format!(
            "{timed_out} invocations ran past the function timeout: the processor must stop \
             BATCH_DEADLINE_MARGIN_MS before its deadline (a chunk committed there is redone \
             after the visibility timeout)"
        ));
    }
    let (invocations, failed_invocations) = stats.invocations();
    let seconds = drained_in.as_secs_f64();
    let mut table = Table::new();
    table.load_style(UTF8_FULL).set_header(["", "count"]);
    let rows: [(&str, String); 15] = [
        ("imports accepted", accepted.len().to_string()),
        (
            "replayed requests (same Idempotency-Key)",
            replays.to_string(),
        ),
        (
            "completed, each exactly once with its rows",
            completed.to_string(),
        ),
        (
            "completed in several chunks (continued)",
            format!(
                "{} (large files: {large_continued} of {}; most chunks: {})",
                totals.continued, totals.large, totals.most_chunks
            ),
        ),
        ("chunks processed, each exactly once", processed.to_string()),
        (
            "SKUs read back, each holding its file's last valid row",
            format!("{} ({} wrong)", values.skus, values.mismatches),
        ),
        (
            "rows written",
            format!(
                "{} ({:.0} rows/s)",
                totals.rows_written,
                totals.rows_written as f64 / seconds
            ),
        ),
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
            "invocations (whole-batch failures; timed out)",
            format!(
                "{invocations} ({failed_invocations}; {})",
                stats.timed_out_invocations()
            ),
        ),
        (
            "function timeout",
            format!("{} s", pipeline.function_timeout.as_secs_f64()),
        ),
        ("drain time", format!("{seconds:.1} s")),
        (
            "throughput",
            format!("{:.0} imports/s", accepted.len() as f64 / seconds),
        ),
    ];
    for (name, value) in rows {
        table.add_row([name.to_owned(), value]);
    }
    println!("{table}");
    Ok((problems, totals))
}

/// Items in the items table per import id: what the imports really left. Every sample file has
/// its own SKUs, so no import overwrites another's items.
async fn items_per_import(pipeline: &Pipeline) -> anyhow::Result<HashMap<String, u64>> {
    let table = pipeline
        .resources
        .reference("ItemsTable")
        .context("the items table")?;
    let mut pages = pipeline
        .clients
        .dynamodb
        .scan()
        .table_name(table)
        .projection_expression("import_id")
        .into_paginator()
        .send();
    let mut counts = HashMap::new();
    while let Some(page) = pages.next().await {
        for item in page.context("scanning the items table")?.items() {
            let id = item
                .get("import_id")
                .and_then(|v| v.as_s().ok())
                .map_or_else(String::new, String::clone);
            *counts.entry(id).or_default() += 1;
        }
    }
    Ok(counts)
}

/// The import ids of the messages parked in the dead-letter queue. Messages are held invisible
/// while reading, so each is seen once, then made visible again: the queue is left as it was.
pub(crate) async fn parked_import_ids(pipeline: &Pipeline) -> anyhow::Result<HashSet<String>> {
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
                .and_then(|a| a.get(queue_worker::job::attributes::JOB_ID))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn burst(imports: usize, large_files: usize) -> Burst {
        Burst {
            imports,
            rows: 10,
            large_files,
            large_rows: 100,
            repeat_every: 10,
            poison_every: 50,
            concurrency: 1,
            drain_timeout: Duration::from_secs(1),
            maximum_concurrency: 1,
        }
    }

    fn kinds(requests: &[Request], kind: Kind) -> Vec<usize> {
        (0..requests.len())
            .filter(|&i| requests[i].source == i && requests[i].kind == kind)
            .collect()
    }

    #[test]
    fn large_files_are_spread_over_the_burst_from_its_first_import() {
        let requests = plan(&burst(60, 3));
        assert_eq!(kinds(&requests, Kind::Large), [0, 20, 40]);
        assert_eq!(kinds(&requests, Kind::Poison), [25]);
        assert_eq!(plan(&burst(1, 1))[0].kind, Kind::Large);
    }

    #[test]
    fn a_repeat_sends_the_same_file_as_the_request_it_repeats() {
        let requests = plan(&burst(60, 3));
        for (i, request) in requests.iter().enumerate() {
            if i % 10 == 9 {
                assert_eq!(request.source, i - 1);
            }
            assert_eq!(request.kind, requests[request.source].kind);
        }
    }

    #[test]
    fn there_are_never_more_large_files_than_small_ones_to_replace() {
        let requests = plan(&burst(3, 10));
        assert_eq!(kinds(&requests, Kind::Large), [0, 1, 2]);
        assert!(kinds(&plan(&burst(60, 0)), Kind::Large).is_empty());
    }
}
