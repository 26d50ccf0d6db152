//! The import worker's outcome table, in memory: objects, items and import records are fakes
//! with the production semantics (the commit is conditional on the chunk count), time is
//! tokio's paused clock. No emulator; these run in milliseconds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use imports::{ImportFormat, ImportStatus, Progress};
use queue_worker::Env;
use queue_worker::batch::{Ack, BatchSettings, Invocation};
use queue_worker::protection::DependencySettings;
use tokio::io::{AsyncReadExt, BufReader};

use super::*;
use crate::items::WriteError;
use crate::rows::Row;
use crate::source::{Opened, ReadFrom, SourceError};
use imports::Checkpoint;

/// Objects by key, each with its ETag; `cut` cuts the next stream opened after that many bytes,
/// `slow` makes the next open take that long.
#[derive(Default)]
struct Objects(
    Mutex<HashMap<String, (Vec<u8>, String)>>,
    Mutex<Option<usize>>,
    Mutex<Option<Duration>>,
);

/// A stream that was cut: every read fails.
struct Cut;

impl tokio::io::AsyncRead for Cut {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()))
    }
}

impl Objects {
    fn put(&self, key: &str, contents: &str, etag: &str) {
        self.0.lock().unwrap().insert(
            key.to_owned(),
            (contents.as_bytes().to_vec(), etag.to_owned()),
        );
    }
}

impl ObjectSource for Objects {
    async fn open(
        &self,
        key: &ObjectKey,
        from: Option<ReadFrom<'_>>,
    ) -> Result<Opened, SourceError> {
        let slow = self.2.lock().unwrap().take();
        if let Some(slow) = slow {
            tokio::time::sleep(slow).await;
        }
        let objects = self.0.lock().unwrap();
        let Some((bytes, etag)) = objects.get(key.as_str()) else {
            return Err(SourceError::NotFound {
                key: key.as_str().to_owned(),
            });
        };
        let offset = match from {
            Some(from) if from.etag != etag => {
                return Err(SourceError::Changed {
                    key: key.as_str().to_owned(),
                    etag: from.etag.to_owned(),
                });
            }
            Some(from) => usize::try_from(from.offset).unwrap(),
            None => 0,
        };
        let rest = bytes[offset..].to_vec();
        let body: crate::source::ObjectBody = match self.1.lock().unwrap().take() {
            Some(cut) => Box::new(BufReader::new(
                std::io::Cursor::new(rest[..cut].to_vec()).chain(Cut),
            )),
            None => Box::new(BufReader::new(std::io::Cursor::new(rest))),
        };
        Ok(Opened {
            body,
            etag: etag.clone(),
        })
    }
}

/// The items table: the last row per SKU, how often each row was written, and how many
/// requests it took. Each request takes effect at once and answers after `latency` of
/// (paused) time; while `down`, every request fails as unavailable, and while
/// `failing` names a SKU, every request holding it does.
#[derive(Default)]
struct Items {
    rows: Mutex<HashMap<String, Row>>,
    /// How many times each row (by line number in its file) was written.
    writes: Mutex<HashMap<String, u32>>,
    requests: AtomicU32,
    latency: Duration,
    down: bool,
    failing: Mutex<Option<String>>,
}

impl ItemWriter for Items {
    async fn write(&self, _: ImportId, rows: &[Row]) -> Result<(), WriteError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let failing = self.failing.lock().unwrap().clone();
        if self.down || rows.iter().any(|row| Some(&row.sku) == failing.as_ref()) {
            return Err(WriteError::Unavailable("the table is down".into()));
        }
        // The write takes effect when sent; its answer takes `latency`. A caller that stops
        // waiting has still written the rows.
        {
            let mut stored = self.rows.lock().unwrap();
            let mut writes = self.writes.lock().unwrap();
            for row in rows {
                stored.insert(row.sku.clone(), row.clone());
                *writes
                    .entry(format!("{} {}", row.sku, row.name))
                    .or_default() += 1;
            }
        }
        tokio::time::sleep(self.latency).await;
        Ok(())
    }
}

/// One import record, as the imports table holds it.
#[derive(Debug, Clone)]
struct Record {
    object_key: String,
    format: ImportFormat,
    etag: Option<String>,
    status: ImportStatus,
    chunks: u32,
    checkpoint: Option<Checkpoint>,
    rows_written: u64,
    rows_rejected: u64,
    reason: Option<String>,
}

/// The imports table, with the DynamoDB store's conditions; while `down`, marking an import
/// failed fails.
#[derive(Default)]
struct Records(Mutex<HashMap<ImportId, Record>>, AtomicBool);

impl Records {
    fn queued(&self, id: ImportId, key: &ObjectKey, format: ImportFormat) {
        self.0.lock().unwrap().insert(
            id,
            Record {
                object_key: key.as_str().to_owned(),
                format,
                etag: None,
                status: ImportStatus::Queued,
                chunks: 0,
                checkpoint: None,
                rows_written: 0,
                rows_rejected: 0,
                reason: None,
            },
        );
    }

    fn get(&self, id: ImportId) -> Record {
        self.0.lock().unwrap().get(&id).cloned().expect("a record")
    }

    fn stored(record: &Record) -> Transition {
        match record.status {
            ImportStatus::Completed => Transition::AlreadyCompleted,
            status => Transition::Superseded {
                status,
                chunks: record.chunks,
                checkpoint: record.checkpoint.clone().map(Box::new),
            },
        }
    }
}

impl ImportResults for Records {
    async fn begin(
        &self,
        id: ImportId,
        key: &ObjectKey,
        format: ImportFormat,
        etag: &str,
        _: SystemTime,
    ) -> Result<Start, StoreError> {
        let mut records = self.0.lock().unwrap();
        let Some(record) = records.get_mut(&id) else {
            return Ok(Start::Stored(Transition::UnknownImport));
        };
        if record.object_key != key.as_str() || record.format != format {
            return Ok(Start::NotTheImportsJob);
        }
        if record.status == ImportStatus::Completed || record.chunks > 0 {
            return Ok(Start::Stored(Self::stored(record)));
        }
        if let Some(pinned) = record.etag.as_ref().filter(|pinned| *pinned != etag) {
            return Ok(Start::ObjectChanged {
                pinned: pinned.clone(),
            });
        }
        record.etag = Some(etag.to_owned());
        record.status = ImportStatus::Processing;
        Ok(Start::Started)
    }

    async fn record_chunk(
        &self,
        id: ImportId,
        chunk: u32,
        end: ChunkEnd<'_>,
        _: SystemTime,
    ) -> Result<Transition, StoreError> {
        let mut records = self.0.lock().unwrap();
        let Some(record) = records.get_mut(&id) else {
            return Ok(Transition::UnknownImport);
        };
        let open = matches!(
            record.status,
            ImportStatus::Queued | ImportStatus::Processing
        );
        if !open || record.chunks != chunk {
            return Ok(Self::stored(record));
        }
        match end {
            ChunkEnd::Completed {
                rows_written,
                rows_rejected,
                ..
            } => {
                record.status = ImportStatus::Completed;
                record.chunks = chunk + 1;
                record.checkpoint = None;
                (record.rows_written, record.rows_rejected) = (rows_written, rows_rejected);
            }
            ChunkEnd::Continued { next } => {
                record.status = ImportStatus::Processing;
                record.chunks = next.chunk;
                (record.rows_written, record.rows_rejected) =
                    (next.rows_written, next.rows_rejected);
                record.checkpoint = Some(next.clone());
            }
        }
        Ok(Transition::Applied)
    }

    async fn progress(&self, id: ImportId) -> Result<Option<Progress>, StoreError> {
        Ok(self.0.lock().unwrap().get(&id).map(|record| Progress {
            object_key: ObjectKey::from_stored(record.object_key.clone()),
            format: record.format,
            state: Self::stored(record),
        }))
    }

    async fn mark_failed(
        &self,
        id: ImportId,
        reason: &str,
        _: SystemTime,
    ) -> Result<Transition, StoreError> {
        if self.1.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the imports table is down".into()));
        }
        let mut records = self.0.lock().unwrap();
        let Some(record) = records.get_mut(&id) else {
            return Ok(Transition::UnknownImport);
        };
        if record.status == ImportStatus::Completed {
            return Ok(Transition::AlreadyCompleted);
        }
        record.status = ImportStatus::Failed;
        record.reason = Some(reason.to_owned());
        Ok(Transition::Applied)
    }
}

type Subject = ImportWorker<Objects, Items, Records>;

/// A worker with the default settings, its stalls held back by the default retry backoff.
fn worker(items: Items) -> Subject {
    let none = Env::from_pairs::<&str, &str>([]);
    let defaults = DependencySettings::from_env(&none).unwrap();
    ImportWorker::new(
        Objects::default(),
        items,
        Records::default(),
        Dependency::new("items-table", defaults),
        "uploads/",
    )
    .with_stall_backoff(BatchSettings::from_env(&none).unwrap().backoff)
}

/// `rows` valid rows (`sku-0`...), then the lines in `bad`.
fn csv(rows: usize, bad: &[&str]) -> String {
    let mut csv = String::from("sku,name,quantity,price\n");
    for i in 0..rows {
        csv.push_str(&format!("sku-{i},Item {i},{i},1.50\n"));
    }
    for line in bad {
        csv.push_str(line);
        csv.push('\n');
    }
    csv
}

/// A queued import of `contents` (or of a missing object) under `uploads/{name}`.
fn submit(worker: &Subject, name: &str, contents: Option<&str>) -> ImportJob {
    let key = ObjectKey::parse(&format!("uploads/{name}"), "uploads/").unwrap();
    if let Some(contents) = contents {
        worker.source.put(key.as_str(), contents, "\"v1\"");
    }
    let id = ImportId::generate();
    worker.imports.queued(id, &key, ImportFormat::Csv);
    ImportJob::new(id, &key, ImportFormat::Csv)
}

/// An invocation with `seconds` before its deadline and the default 3 s margin.
fn invocation(seconds: u64) -> Invocation {
    Invocation::new(
        SystemTime::now() + Duration::from_secs(seconds),
        Duration::from_secs(3),
    )
}

/// Runs `job` as delivery `receive_count` in an invocation with 60 s left.
async fn run(
    worker: &Subject,
    job: &ImportJob,
    receive_count: u32,
) -> Result<Done<ImportJob>, RecordError> {
    run_within(worker, job, receive_count, 60).await
}

/// Runs `job` as delivery `receive_count` in an invocation with `seconds` left.
async fn run_within(
    worker: &Subject,
    job: &ImportJob,
    receive_count: u32,
    seconds: u64,
) -> Result<Done<ImportJob>, RecordError> {
    let invocation = invocation(seconds);
    let run = Run {
        invocation: &invocation,
        receive_count,
        took_over: receive_count > 1,
    };
    worker.run(job, &run).await
}

/// A worker whose every write takes `seconds` of (paused) time.
fn slow_worker(seconds: u64) -> Subject {
    worker(Items {
        latency: Duration::from_secs(seconds),
        ..Items::default()
    })
}

fn class(result: &Result<Done<ImportJob>, RecordError>) -> Option<&'static str> {
    match result {
        Err(RecordError::Permanent { code, .. }) => Some(code),
        _ => None,
    }
}

#[tokio::test]
async fn a_file_is_imported_and_its_import_completed_with_its_counts() {
    let worker = worker(Items::default());
    let job = submit(&worker, "a.csv", Some(&csv(60, &["bad,row"])));
    let done = run(&worker, &job, 1).await.unwrap();
    assert_eq!((done.ack(), done.next()), (Ack::Processed, None));
    let record = worker.imports.get(job.import_id);
    assert_eq!(record.status, ImportStatus::Completed);
    assert_eq!((record.rows_written, record.rows_rejected), (60, 1));
    assert_eq!(worker.writer.rows.lock().unwrap().len(), 60);
    assert_eq!(
        worker.writer.requests.load(Ordering::SeqCst),
        3,
        "25 rows per request"
    );
}

#[tokio::test]
async fn a_bad_job_or_file_fails_its_import_with_the_reason_and_is_parked_with_its_class() {
    let worker = worker(Items::default());
    let mut old_schema = submit(&worker, "a.csv", Some(&csv(1, &[])));
    old_schema.schema_version = 7;
    let mut unsafe_key = submit(&worker, "b.csv", Some(&csv(1, &[])));
    unsafe_key.object_key = "uploads/../secrets.csv".into();
    let missing = submit(&worker, "c.csv", None);
    let no_valid_rows = submit(&worker, "d.csv", Some(&csv(0, &["x,,y,z", "q,w,e,r"])));
    let no_header = submit(&worker, "e.csv", Some("sku;name\n1;2\n"));
    for (job, expected) in [
        (&old_schema, ImportFailure::UnsupportedSchema),
        (&unsafe_key, ImportFailure::UnsafeObjectKey),
        (&missing, ImportFailure::ObjectMissing),
        (&no_valid_rows, ImportFailure::InvalidFile),
        (&no_header, ImportFailure::InvalidFile),
    ] {
        let result = run(&worker, job, 1).await;
        assert_eq!(class(&result), Some(expected.as_str()), "{expected:?}");
        let record = worker.imports.get(job.import_id);
        assert_eq!(record.status, ImportStatus::Failed, "{expected:?}");
        assert!(record.reason.is_some_and(|r| !r.is_empty()));
    }
    assert_eq!(worker.writer.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_bad_file_whose_failure_cannot_be_recorded_is_retried_not_parked() {
    let worker = worker(Items::default());
    let missing = submit(&worker, "gone.csv", None);
    worker.imports.1.store(true, Ordering::SeqCst);
    let result = run(&worker, &missing, 1).await;
    assert!(
        matches!(result, Err(RecordError::Retryable { .. })),
        "{result:?}"
    );
    worker.imports.1.store(false, Ordering::SeqCst);
    let again = run(&worker, &missing, 2).await;
    assert_eq!(class(&again), Some(ImportFailure::ObjectMissing.as_str()));
    assert_eq!(
        worker.imports.get(missing.import_id).status,
        ImportStatus::Failed
    );
}

#[tokio::test]
async fn a_table_that_is_down_is_retried_without_failing_the_import() {
    let worker = worker(Items {
        down: true,
        ..Items::default()
    });
    let job = submit(&worker, "a.csv", Some(&csv(10, &[])));
    let result = run(&worker, &job, 1).await;
    assert!(
        matches!(result, Err(RecordError::Retryable { .. })),
        "{result:?}"
    );
    // Started (PROCESSING, nothing counted), not failed.
    let record = worker.imports.get(job.import_id);
    assert_eq!(
        (record.status, record.chunks, record.rows_written),
        (ImportStatus::Processing, 0, 0)
    );
}

#[tokio::test]
async fn a_job_of_no_known_import_is_parked() {
    let worker = worker(Items::default());
    let job = submit(&worker, "a.csv", Some(&csv(3, &[])));
    worker.imports.0.lock().unwrap().clear();
    let result = run(&worker, &job, 1).await;
    assert_eq!(class(&result), Some(ImportFailure::UnknownImport.as_str()));
}

#[tokio::test(start_paused = true)]
async fn out_of_time_the_import_is_checkpointed_and_continued_until_it_completes_exactly() {
    // Each request takes 1 s and an invocation has 5 s, 2 s of it for work: a chunk writes
    // about 4 requests of 25 rows (2 in flight), so 400 rows take several chunks.
    let worker = slow_worker(1);
    let bad = ["bad-1,,1,1.00", "bad-2,,1,1.00"];
    let first = submit(&worker, "a.csv", Some(&csv(400, &bad)));
    let mut job = first.clone();
    let mut chunks = 0;
    loop {
        let done = run_within(&worker, &job, 1, 5).await.unwrap();
        chunks += 1;
        assert_eq!(done.ack(), Ack::Processed);
        let Some(next) = done.next() else {
            break;
        };
        assert_eq!(next.chunk(), job.chunk() + 1);
        let record = worker.imports.get(first.import_id);
        assert_eq!(record.status, ImportStatus::Processing);
        assert_eq!(record.chunks, next.chunk());
        job = next.clone();
        assert!(chunks < 50, "the import makes progress");
    }
    assert!(chunks >= 3, "took {chunks} chunks");
    let record = worker.imports.get(first.import_id);
    assert_eq!(record.status, ImportStatus::Completed);
    assert_eq!((record.rows_written, record.rows_rejected), (400, 2));
    assert_eq!(worker.writer.rows.lock().unwrap().len(), 400);
}

#[tokio::test(start_paused = true)]
async fn a_chunk_with_no_time_to_make_progress_continues_later_from_the_same_place() {
    // Each item write takes 4 s: an invocation with 5 s (2 s of work) writes nothing.
    let worker = slow_worker(4);
    let job = submit(&worker, "a.csv", Some(&csv(10, &[])));
    let mut next = job.clone();
    for stall in 1..=2 {
        let done = run_within(&worker, &next, 1, 5).await.unwrap();
        assert_eq!(done.ack(), Ack::Processed);
        next = done.next().expect("a stalled chunk continues").clone();
        let checkpoint = next.resume.clone().unwrap();
        // The same place (after the header), one more stall, nothing counted.
        assert_eq!((checkpoint.chunk, checkpoint.stalls), (stall, stall));
        assert_eq!((checkpoint.offset, checkpoint.line), (24, 1));
        assert_eq!((checkpoint.rows_written, checkpoint.rows_rejected), (0, 0));
        // Held back as a retry would be: 10 s doubling, in the upper half.
        let full = Duration::from_secs(10 << (stall - 1));
        assert!(
            (full / 2..=full).contains(&done.delay()),
            "{:?}",
            done.delay()
        );
        let record = worker.imports.get(job.import_id);
        assert_eq!(
            (record.status, record.chunks),
            (ImportStatus::Processing, stall)
        );
    }
    // With time to write, it completes exactly, and its next stall would count from zero.
    loop {
        let done = run_within(&worker, &next, 1, 60).await.unwrap();
        match done.next() {
            Some(more) => {
                assert_eq!(more.resume.as_ref().unwrap().stalls, 0);
                assert_eq!(done.delay(), Duration::ZERO);
                next = more.clone();
            }
            None => break,
        }
    }
    let record = worker.imports.get(job.import_id);
    assert_eq!(record.status, ImportStatus::Completed);
    assert_eq!((record.rows_written, record.rows_rejected), (10, 0));
    assert_eq!(worker.writer.rows.lock().unwrap().len(), 10);
}

#[tokio::test(start_paused = true)]
async fn an_object_that_opens_too_slowly_stalls_a_continuation_and_retries_chunk_0() {
    let worker = slow_worker(1);
    let job = submit(&worker, "a.csv", Some(&csv(400, &[])));
    // Chunk 0 has no checkpoint to continue from: it is retried, the import untouched.
    *worker.source.2.lock().unwrap() = Some(Duration::from_secs(10));
    let result = run_within(&worker, &job, 1, 5).await;
    assert!(
        matches!(result, Err(RecordError::Retryable { .. })),
        "{result:?}"
    );
    let record = worker.imports.get(job.import_id);
    assert_eq!(
        (record.status, record.etag, record.rows_written),
        (ImportStatus::Queued, None, 0)
    );
    let first = run_within(&worker, &job, 2, 5).await.unwrap();
    let second = first.next().unwrap().clone();
    let at = second.resume.clone().unwrap();
    assert!(at.rows_written > 0);
    // A continuation keeps its place and counts the stall.
    *worker.source.2.lock().unwrap() = Some(Duration::from_secs(10));
    let done = run_within(&worker, &second, 1, 5).await.unwrap();
    let third = done.next().unwrap().clone();
    assert_eq!(third.resume, Some(at.stalled()));
    assert_eq!((third.chunk(), at.stalled().stalls), (2, 1));
    run_to_the_end(&worker, &third).await;
    let record = worker.imports.get(job.import_id);
    assert_eq!(record.status, ImportStatus::Completed);
    assert_eq!((record.rows_written, record.rows_rejected), (400, 0));
}

#[tokio::test(start_paused = true)]
async fn an_import_that_stalls_too_often_in_a_row_is_retried_as_a_failure() {
    let worker = slow_worker(4);
    let job = submit(&worker, "a.csv", Some(&csv(10, &[])));
    let mut next = job.clone();
    for _ in 0..MAX_STALLS {
        let done = run_within(&worker, &next, 1, 5).await.unwrap();
        next = done.next().expect("a stalled chunk continues").clone();
    }
    assert_eq!(next.resume.as_ref().unwrap().stalls, MAX_STALLS);
    let result = run_within(&worker, &next, 1, 5).await;
    assert!(
        matches!(&result, Err(RecordError::Retryable { reason, .. }) if reason.contains("no progress")),
        "{result:?}"
    );
    // Nothing more is recorded, and the import is not failed: a later delivery may progress.
    let record = worker.imports.get(job.import_id);
    assert_eq!(
        (record.status, record.chunks),
        (ImportStatus::Processing, MAX_STALLS)
    );
    assert!(run_within(&worker, &next, 2, 60).await.is_ok());
}

#[test]
fn a_stall_is_held_back_as_long_as_a_retry_after_as_many_receives_or_not_without_backoff() {
    let key = ObjectKey::parse("uploads/a.csv", "uploads/").unwrap();
    let job = ImportJob::new(ImportId::generate(), &key, ImportFormat::Csv);
    let at = |stalls| Checkpoint {
        chunk: 1,
        offset: 24,
        line: 1,
        etag: "\"v1\"".into(),
        header: None,
        rows_written: 0,
        rows_rejected: 0,
        rejected_examples: Vec::new(),
        stalls,
    };
    let delay = |worker: &Subject, stalls| {
        let end = ChunkEnd::Continued { next: &at(stalls) };
        worker
            .settle(&job, Some(end), Ok(Transition::Applied))
            .unwrap()
            .delay()
    };
    let worker = worker(Items::default());
    assert_eq!(delay(&worker, 0), Duration::ZERO);
    for (stalls, full) in [(1, 10), (2, 20), (5, 160), (7, 640), (MAX_STALLS, 900)] {
        let full = Duration::from_secs(full);
        for _ in 0..100 {
            let delay = delay(&worker, stalls);
            assert!((full / 2..=full).contains(&delay), "{stalls}: {delay:?}");
        }
    }
    let at_once = worker.with_stall_backoff(None);
    assert_eq!(delay(&at_once, 3), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_redelivered_chunk_that_was_committed_writes_nothing_and_resends_its_continuation() {
    let worker = slow_worker(1);
    let job = submit(&worker, "a.csv", Some(&csv(200, &[])));
    let first = run_within(&worker, &job, 1, 5).await.unwrap();
    let sent = first.next().cloned().expect("a continuation");
    let requests = worker.writer.requests.load(Ordering::SeqCst);

    // The worker died before completing its claim: the message comes back.
    let again = run_within(&worker, &job, 2, 5).await.unwrap();
    assert_eq!(again.ack(), Ack::Duplicate);
    assert_eq!(
        again.next(),
        Some(&sent),
        "the same continuation, collapsed by its own key"
    );
    assert_eq!(
        worker.writer.requests.load(Ordering::SeqCst),
        requests,
        "nothing rewritten"
    );
}

/// Runs `job` and its continuations to the end, each chunk as a first delivery; returns the
/// chunks it took.
async fn run_to_the_end(worker: &Subject, job: &ImportJob) -> u32 {
    let mut job = job.clone();
    let mut chunks = 1;
    while let Some(next) = run(worker, &job, 1).await.unwrap().next().cloned() {
        job = next;
        chunks += 1;
        assert!(chunks < 50, "the import makes progress");
    }
    chunks
}

#[tokio::test(start_paused = true)]
async fn a_write_failing_mid_chunk_keeps_the_rows_written_before_it_and_continues() {
    let worker = worker(Items::default());
    // The 4th request (rows 75 to 99) fails every attempt; the one in flight beside it, and
    // any after it, succeed but must not count.
    *worker.writer.failing.lock().unwrap() = Some("sku-80".into());
    let job = submit(&worker, "a.csv", Some(&csv(200, &[])));
    let done = run(&worker, &job, 1).await.unwrap();
    let next = done.next().cloned().expect("a continuation");
    let record = worker.imports.get(job.import_id);
    assert_eq!(record.status, ImportStatus::Processing);
    assert_eq!(next.resume.as_ref().unwrap().rows_written, 75, "3 requests");
    assert_eq!(record.rows_written, 75);
    assert!(
        worker.writer.rows.lock().unwrap().contains_key("sku-100"),
        "a later request went through"
    );

    *worker.writer.failing.lock().unwrap() = None;
    run_to_the_end(&worker, &next).await;
    let record = worker.imports.get(job.import_id);
    assert_eq!(record.status, ImportStatus::Completed);
    assert_eq!(record.rows_written, 200, "each row counted once");
    assert_eq!(worker.writer.rows.lock().unwrap().len(), 200);
}

#[tokio::test(start_paused = true)]
async fn a_stream_cut_mid_object_keeps_the_rows_written_before_it_and_continues() {
    let worker = worker(Items::default());
    // A rejected row among the first 100, then a cut before row 110: the two requests in
    // flight at the cut (rows 50 to 99) finish and count, the rows read after them do not.
    let mut contents = csv(200, &[]);
    let row_90 = contents.find("sku-90,").unwrap();
    contents.insert_str(row_90, "bad-1,,1,1.00\n");
    let job = submit(&worker, "a.csv", Some(&contents));
    *worker.source.1.lock().unwrap() = Some(contents.find("sku-110,").unwrap());
    let done = run(&worker, &job, 1).await.unwrap();
    let next = done.next().cloned().expect("a continuation");
    let resume = next.resume.as_ref().unwrap();
    assert_eq!((resume.rows_written, resume.rows_rejected), (100, 1));

    run_to_the_end(&worker, &next).await;
    let record = worker.imports.get(job.import_id);
    assert_eq!(record.status, ImportStatus::Completed);
    assert_eq!((record.rows_written, record.rows_rejected), (200, 1));
    assert_eq!(worker.writer.rows.lock().unwrap().len(), 200);
}

#[tokio::test(start_paused = true)]
async fn a_stream_cut_before_any_row_was_written_is_retried() {
    let worker = worker(Items::default());
    let contents = csv(200, &[]);
    let job = submit(&worker, "a.csv", Some(&contents));
    // After the header and a few rows: fewer than one request's worth.
    *worker.source.1.lock().unwrap() = Some(contents.find("sku-10,").unwrap());
    let result = run(&worker, &job, 1).await;
    assert!(
        matches!(result, Err(RecordError::Retryable { .. })),
        "{result:?}"
    );
    // Started (PROCESSING, nothing counted), not failed.
    let record = worker.imports.get(job.import_id);
    assert_eq!(
        (record.status, record.chunks, record.rows_written),
        (ImportStatus::Processing, 0, 0)
    );
    assert_eq!(run_to_the_end(&worker, &job).await, 1);
    assert_eq!(worker.imports.get(job.import_id).rows_written, 200);
}

#[tokio::test]
async fn a_redelivery_of_a_completed_import_is_a_duplicate_and_writes_nothing() {
    let worker = worker(Items::default());
    let job = submit(&worker, "a.csv", Some(&csv(30, &[])));
    assert_eq!(run(&worker, &job, 1).await.unwrap().ack(), Ack::Processed);
    let requests = worker.writer.requests.load(Ordering::SeqCst);
    let again = run(&worker, &job, 2).await.unwrap();
    assert_eq!((again.ack(), again.next()), (Ack::Duplicate, None));
    assert_eq!(worker.writer.requests.load(Ordering::SeqCst), requests);
}

#[tokio::test(start_paused = true)]
async fn an_object_replaced_mid_import_fails_the_import_as_changed() {
    let worker = slow_worker(1);
    let job = submit(&worker, "a.csv", Some(&csv(200, &[])));
    let first = run_within(&worker, &job, 1, 5).await.unwrap();
    let next = first.next().cloned().expect("a continuation");
    worker.source.put(&job.object_key, &csv(300, &[]), "\"v2\"");
    let result = run_within(&worker, &next, 1, 5).await;
    assert_eq!(class(&result), Some(ImportFailure::ObjectChanged.as_str()));
    assert_eq!(
        worker.imports.get(job.import_id).status,
        ImportStatus::Failed
    );
}

#[test]
fn settle_maps_every_state_of_the_record_to_an_outcome() {
    let w = worker(Items::default());
    let key = ObjectKey::parse("uploads/a.csv", "uploads/").unwrap();
    let job = ImportJob::new(ImportId::generate(), &key, ImportFormat::Csv);
    let checkpoint = |chunk| Checkpoint {
        chunk,
        offset: 100,
        line: 5,
        etag: "\"v1\"".into(),
        header: None,
        rows_written: 4,
        rows_rejected: 0,
        rejected_examples: Vec::new(),
        stalls: 0,
    };
    let second = job.continued(checkpoint(2));
    let superseded = |status, chunks, checkpoint: Option<Checkpoint>| {
        Ok(Transition::Superseded {
            status,
            chunks,
            checkpoint: checkpoint.map(Box::new),
        })
    };
    let completed = ChunkEnd::Completed {
        rows_written: 4,
        rows_rejected: 0,
        summary: None,
    };
    let next = checkpoint(1);
    let continued = ChunkEnd::Continued { next: &next };
    let outcome = |result: Result<Done<ImportJob>, RecordError>| match result {
        Ok(done) => format!(
            "{:?} next={:?}",
            done.ack(),
            done.next().map(ImportJob::chunk)
        ),
        Err(RecordError::Permanent { code, .. }) => format!("parked {code}"),
        Err(RecordError::Retryable { .. }) => "retried".into(),
    };
    let cases = [
        (
            w.settle(&job, Some(completed), Ok(Transition::Applied)),
            "Processed next=None",
        ),
        (
            w.settle(&job, Some(continued), Ok(Transition::Applied)),
            "Processed next=Some(1)",
        ),
        (
            w.settle(&job, None, Ok(Transition::Applied)),
            "Duplicate next=None",
        ),
        (
            w.settle(&job, Some(completed), Ok(Transition::AlreadyCompleted)),
            "Duplicate next=None",
        ),
        (
            w.settle(
                &job,
                None,
                superseded(ImportStatus::Processing, 1, Some(checkpoint(1))),
            ),
            "Duplicate next=Some(1)",
        ),
        (
            w.settle(
                &job,
                None,
                superseded(ImportStatus::Processing, 3, Some(checkpoint(3))),
            ),
            "Duplicate next=None",
        ),
        (
            w.settle(&job, None, superseded(ImportStatus::Failed, 0, None)),
            "Duplicate next=None",
        ),
        (
            w.settle(
                &second,
                None,
                superseded(ImportStatus::Processing, 1, Some(checkpoint(1))),
            ),
            "parked unexpected_chunk",
        ),
        (
            w.settle(&job, None, Ok(Transition::UnknownImport)),
            "parked unknown_import",
        ),
        (
            w.settle(
                &job,
                Some(completed),
                Err(StoreError::Unavailable("the table is down".into())),
            ),
            "retried",
        ),
    ];
    for (i, (result, expected)) in cases.into_iter().enumerate() {
        assert_eq!(outcome(result), expected, "case {i}");
    }

    // A stall committed by an earlier delivery: its continuation is sent again with the same
    // count, held back again; a continuation with progress is not held back.
    let stalled = Checkpoint {
        stalls: 2,
        ..checkpoint(1)
    };
    let stored = superseded(ImportStatus::Processing, 1, Some(stalled.clone()));
    let done = w.settle(&job, None, stored).unwrap();
    assert_eq!(done.ack(), Ack::Duplicate);
    assert_eq!(done.next().unwrap().resume.as_ref(), Some(&stalled));
    let held = Duration::from_secs(10)..=Duration::from_secs(20);
    assert!(held.contains(&done.delay()), "{:?}", done.delay());
    let continued = ChunkEnd::Continued { next: &stalled };
    let done = w
        .settle(&job, Some(continued), Ok(Transition::Applied))
        .unwrap();
    assert!(held.contains(&done.delay()), "{:?}", done.delay());
    let continued = ChunkEnd::Continued { next: &next };
    let done = w
        .settle(&job, Some(continued), Ok(Transition::Applied))
        .unwrap();
    assert_eq!(done.delay(), Duration::ZERO);
}

#[test]
fn the_readme_lists_every_failure_class() {
    let readme = include_str!("../../../../README.md");
    let classes = ImportFailure::ALL
        .iter()
        .map(|class| class.as_str())
        .chain(queue_worker::worker::JobFailure::ALL.map(|class| class.as_str()));
    for class in classes {
        assert!(
            readme.contains(&format!("`{class}`")),
            "README lacks `{class}`"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_clean_stop_writes_no_row_twice_over_a_continued_import() {
    // 700 ms a write, two in flight: every stop time finds writes in flight.
    let worker = worker(Items {
        latency: Duration::from_millis(700),
        ..Items::default()
    });
    let job = submit(&worker, "a.csv", Some(&csv(1_000, &[])));
    let mut job = job;
    let mut chunks = 1;
    while let Some(next) = run_within(&worker, &job, 1, 5)
        .await
        .unwrap()
        .next()
        .cloned()
    {
        job = next;
        chunks += 1;
        assert!(chunks < 100, "the import makes progress");
    }
    assert!(chunks > 5, "the import continued over {chunks} chunks");
    let record = worker.imports.get(job.import_id);
    assert_eq!(
        (record.status, record.rows_written),
        (ImportStatus::Completed, 1_000)
    );
    let writes = worker.writer.writes.lock().unwrap();
    assert_eq!(writes.len(), 1_000);
    let twice: Vec<_> = writes.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} rows written more than once, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(3)]
    );
}

/// A file whose `sku-dup` appears near its start (quantity 1) and near its end (quantity 2).
fn csv_with_a_repeated_sku(rows: usize) -> String {
    let mut csv = String::from("sku,name,quantity,price\nsku-dup,First,1,1.00\n");
    for i in 0..rows {
        csv.push_str(&format!("sku-{i},Item {i},{i},1.50\n"));
    }
    csv.push_str("sku-dup,Last,2,1.00\n");
    csv
}

#[tokio::test(start_paused = true)]
async fn a_second_copy_of_chunk_0_after_later_chunks_wrote_writes_nothing() {
    let worker = slow_worker(1);
    let job = submit(&worker, "a.csv", Some(&csv_with_a_repeated_sku(300)));
    let first = run_within(&worker, &job, 1, 5).await.unwrap();
    let mut next = first.next().cloned().expect("a continuation");
    while let Some(after) = run_within(&worker, &next, 1, 60)
        .await
        .unwrap()
        .next()
        .cloned()
    {
        next = after;
    }
    let quantity = || worker.writer.rows.lock().unwrap()["sku-dup"].quantity;
    assert_eq!(quantity(), 2, "the file's last row for the SKU wins");
    let requests = worker.writer.requests.load(Ordering::SeqCst);

    // A second copy of the producer's job, delivered once (its claim expired, or the claim's
    // completion was lost): the receive count says nothing of what was done.
    let copy = run_within(&worker, &job, 1, 60).await.unwrap();
    assert_eq!((copy.ack(), copy.next()), (Ack::Duplicate, None));
    assert_eq!(worker.writer.requests.load(Ordering::SeqCst), requests);
    assert_eq!(quantity(), 2, "the older value did not come back");
}

#[tokio::test(start_paused = true)]
async fn an_object_replaced_after_a_killed_chunk_0_fails_the_import_instead_of_mixing_files() {
    let worker = slow_worker(1);
    let job = submit(&worker, "a.csv", Some(&csv(200, &[])));
    // Chunk 0 is killed after writing some rows and before its commit.
    let killed = tokio::time::timeout(
        Duration::from_millis(2_500),
        run_within(&worker, &job, 1, 60),
    )
    .await;
    assert!(killed.is_err(), "the chunk was still running");
    assert!(!worker.writer.rows.lock().unwrap().is_empty());
    // The file is uploaded again, with other rows, before the retry.
    let mut other = String::from("sku,name,quantity,price\n");
    for i in 0..300 {
        other.push_str(&format!("new-{i},New {i},{i},2.50\n"));
    }
    worker.source.put(&job.object_key, &other, "\"v2\"");

    let retry = run_within(&worker, &job, 2, 60).await;
    assert_eq!(class(&retry), Some(ImportFailure::ObjectChanged.as_str()));
    assert_eq!(
        worker.imports.get(job.import_id).status,
        ImportStatus::Failed
    );
    let rows = worker.writer.rows.lock().unwrap();
    assert!(
        rows.keys().all(|sku| sku.starts_with("sku-")),
        "no row of the second file was written beside the first's"
    );
}

#[tokio::test]
async fn a_job_naming_another_object_than_its_import_is_parked_and_the_import_untouched() {
    let worker = worker(Items::default());
    let job = submit(&worker, "a.csv", Some(&csv(10, &[])));
    let other = ObjectKey::parse("uploads/other.csv", "uploads/").unwrap();
    worker.source.put(other.as_str(), &csv(5, &[]), "\"v1\"");
    let forged = ImportJob::new(job.import_id, &other, ImportFormat::Csv);
    let result = run(&worker, &forged, 1).await;
    assert_eq!(class(&result), Some(ImportFailure::JobMismatch.as_str()));
    assert_eq!(worker.writer.requests.load(Ordering::SeqCst), 0);
    assert_eq!(
        worker.imports.get(job.import_id).status,
        ImportStatus::Queued
    );
}

#[tokio::test(start_paused = true)]
async fn a_stop_while_the_last_rows_wait_for_a_write_slot_continues_with_them_unwritten() {
    // Two writes of 25 rows take the two slots for 1 s; the last 10 rows wait for one when the
    // stop time comes at 0.5 s. The two writes are awaited past it and counted; the 10 rows
    // were never sent, so the import continues from them instead of completing without them.
    let worker = slow_worker(1);
    let job = submit(&worker, "a.csv", Some(&csv(60, &[])));
    let invocation = Invocation::new(
        SystemTime::now() + Duration::from_millis(3_500),
        Duration::from_secs(3),
    );
    let run = Run {
        invocation: &invocation,
        receive_count: 1,
        took_over: false,
    };
    let done = worker.run(&job, &run).await.unwrap();
    let next = done.next().cloned().expect("a continuation");
    assert_eq!(next.resume.as_ref().unwrap().rows_written, 50);
    assert_eq!(
        worker.imports.get(job.import_id).status,
        ImportStatus::Processing
    );
    assert_eq!(run_to_the_end(&worker, &next).await, 1);
    let record = worker.imports.get(job.import_id);
    assert_eq!(
        (record.status, record.rows_written),
        (ImportStatus::Completed, 60)
    );
    assert_eq!(worker.writer.rows.lock().unwrap().len(), 60);
}

#[tokio::test]
async fn a_file_that_fails_is_told_by_line_and_rule_in_a_bounded_reason_without_its_bytes() {
    const SECRET: &str = "TENANT-7-SECRET";
    let worker = worker(Items::default());
    let ndjson_as_csv = format!(
        "{{\"sku\":\"W-1\",\"name\":\"{}\",\"quantity\":1,\"price\":1}}\n",
        SECRET.repeat(400 * 1024 / SECRET.len())
    );
    let long_header = format!(
        "{}\nW-1,Widget,3,9.99\n",
        SECRET.repeat(100 * 1024 / SECRET.len())
    );
    let bad_header = format!("sku,name,\x1b[31m{SECRET},price\nW-1,Widget,3,9.99\n");
    let escapes = format!("\x1b[31m{SECRET},Widget,1,1");
    let price = format!("W-1,Widget,1,{SECRET}\x1b[31m");
    let no_valid_rows = csv(0, &[&escapes, &price, &escapes, &price, &escapes, &price]);
    let open_quote = format!(
        "{}W-9,\"{SECRET}\x1b[31m,1,1\n{}",
        csv(2, &[]),
        csv(3000, &[]).repeat(20)
    );
    for contents in [
        ndjson_as_csv,
        long_header,
        bad_header,
        no_valid_rows,
        open_quote,
    ] {
        let job = submit(&worker, "tenant.csv", Some(&contents));
        let result = run(&worker, &job, 1).await;
        let Err(RecordError::Permanent { code, reason, .. }) = &result else {
            panic!("expected a permanent failure, got {result:?}");
        };
        assert_eq!(*code, ImportFailure::InvalidFile.as_str());
        let recorded = worker.imports.get(job.import_id).reason.unwrap();
        assert_eq!(&recorded, reason, "the import's error is the parked reason");
        assert!(reason.len() <= crate::rows::MAX_REASON_BYTES, "{reason}");
        assert!(reason.starts_with("line ") || reason.starts_with("no valid rows: "));
        assert!(
            !reason.contains(SECRET) && !reason.chars().any(char::is_control),
            "{reason:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_continuation_that_is_not_where_its_import_stands_is_parked_before_writing() {
    let worker = slow_worker(1);
    let job = submit(&worker, "a.csv", Some(&csv(200, &[])));
    let first = run_within(&worker, &job, 1, 5).await.unwrap();
    let next = first.next().cloned().expect("a continuation");
    let requests = worker.writer.requests.load(Ordering::SeqCst);

    // The right import and object, but another starting point (a forged or stale job).
    let mut skipping = next.clone();
    skipping.resume.as_mut().unwrap().offset += 10;
    // The right starting point, but another object.
    let other = ObjectKey::parse("uploads/other.csv", "uploads/").unwrap();
    worker.source.put(other.as_str(), &csv(200, &[]), "\"v1\"");
    let mut elsewhere = next.clone();
    elsewhere.object_key = other.as_str().to_owned();
    for forged in [skipping, elsewhere] {
        let result = run_within(&worker, &forged, 1, 60).await;
        assert_eq!(class(&result), Some(ImportFailure::JobMismatch.as_str()));
    }
    assert_eq!(worker.writer.requests.load(Ordering::SeqCst), requests);
    assert_eq!(
        worker.imports.get(job.import_id).status,
        ImportStatus::Processing
    );
    // The true continuation still finishes the import.
    assert!(run_to_the_end(&worker, &next).await >= 1);
    assert_eq!(
        worker.imports.get(job.import_id).status,
        ImportStatus::Completed
    );
}
