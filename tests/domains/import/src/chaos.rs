//! `make chaos`: a soak of the whole local pipeline under combined faults, then a measured check.
//! The long form, with the numbers: `infra/local-runner/CHAOS.md`.
//!
//! The production processor runs behind the emulated event source mapping, as in the demo, with
//! every seam it has wrapped by a fault injector (no production code path changes), in one
//! execution environment per concurrent invocation (its own processor, circuit breaker and
//! concurrency limit, reused while warm and replaced after a kill, as on Lambda):
//! - **kills**: an invocation's future is dropped, either at a random time or at a chosen point
//!   (before the claim, after some item writes, before the chunk's commit, between the commit
//!   and the guard's `complete`). The mapping sees a function error, so the whole batch comes
//!   back after the visibility timeout, as on Lambda after a crash;
//! - **duplicate deliveries**: the mapping hands some received messages to a second, concurrent
//!   invocation as well (same message id and receipt handle: the emulator cannot hand out a
//!   second receipt of a message that is in flight);
//! - **faults on the AWS call paths**: the guard table (`IdempotencyStore`), the imports table
//!   (`ImportResults`), S3 (`ObjectSource`: a failed `GetObject`, or the stream cut mid-object),
//!   the continuation send (`JobQueue`), `ChangeMessageVisibility` and the DLQ send
//!   (`QueueActions`). Half of the table faults are "response lost": the call is made, then
//!   reported failed;
//! - **panics** (`--panic-rate`): an item write panics; the record must be reported failed and
//!   retried, and its import still complete exactly once;
//! - **a capacity-limited downstream**: the items writer admits at most C concurrent requests
//!   and R requests/s and throttles beyond (`WriteError::Throttled`), and measures its peak
//!   concurrency, goodput and the rows written per import. By default it is a fake partner API
//!   with a fixed service time that keeps the last value written of each SKU, as a table would
//!   (the emulator's one-at-a-time DynamoDB would otherwise be the bound, not C and R);
//!   `--downstream-latency 0` writes to the items table instead.
//!
//! The files are the demo's ([`crate::sample`]): SKUs repeat with changing values, across the
//! chunks of the large files. The check compares every SKU of every completed import, where the
//! downstream keeps it, with its file's last valid row: a killed, redelivered or duplicated
//! chunk that writes an older value over a newer one fails the soak.
//!
//! Goodput is measured where the downstream is the bottleneck: over the seconds in which the
//! callers kept at least `bound x latency` calls pending (Little's law: enough to reach the
//! bound), as successful requests/s over the bound min(R, C / latency).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::SqsEvent;
use comfy_table::{ContentArrangement, Table, presets::UTF8_FULL};
use import_processor::{
    DynamoDbItems, ImportWorker, ItemWriter, ObjectSource, Opened, Parts, ProcessorConfig,
    ReadFrom, Row, S3ObjectSource, SourceError, WriteError,
};
use imports::{
    ChunkEnd, DynamoDbImports, ImportFormat, ImportId, ImportResults, ObjectKey, Progress, Start,
    StoreError, Transition,
};
use queue_worker::batch::{BatchProcessor, RecordStatus, SqsQueueActions};
use queue_worker::idempotency::DynamoDbStore;
use queue_worker::job::SqsJobQueue;
use queue_worker::protection::Concurrency;
use queue_worker::testing::{
    BEFORE_COMPLETE, BEFORE_THE_CLAIM, Ended, Faults, FaultyJobs, FaultyQueue, FaultyStore,
    injected,
};
use queue_worker::worker::Idempotent;
use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

use crate::demo::{self, Accepted, Burst, Kind};
use crate::pipeline::{Pipeline, Processor, Stats};
use crate::sample::{self, Expected, Stored, ValueCheck};
use local_runner::esm::Function;

/// The chaos knobs. Rates are probabilities (0 to 1).
#[derive(Debug, Clone, Copy)]
pub struct Knobs {
    /// Share of invocations killed at a random time (half within 300 ms of the start, half
    /// anywhere up to the function timeout).
    pub kill_rate: f64,
    /// Share of invocations killed at a kill point, chosen at random among [`KILL_POINTS`]: at
    /// the first record reaching it (at an item write: after ~50 writes on average). One
    /// decision per invocation, as a crash is on Lambda, so that large chunks, which pass many
    /// points, are not singled out.
    pub kill_point_rate: f64,
    /// Share of received messages also handed to a second, concurrent invocation.
    pub duplicate_rate: f64,
    /// Share of the calls on each AWS path (guard, imports, S3, SQS) that fail.
    pub fault_rate: f64,
    /// Share of S3 reads whose stream is cut mid-object.
    pub cut_rate: f64,
    /// The items downstream's most concurrent requests (C).
    pub capacity: usize,
    /// The items downstream's most requests per second (R).
    pub rate: f64,
    /// The downstream's service time per request. Zero writes to the items table in the
    /// emulator (whose one-at-a-time DynamoDB then bounds the downstream, not C and R); above
    /// zero, the downstream is a fake partner API that takes this long and keeps the rows in
    /// memory, so that C and R are what binds.
    pub latency: Duration,
    /// Visibility timeout of each receive (overrides the queue's).
    pub visibility_timeout: Duration,
    /// Share of item writes that panic (through the downstream's seam): the record must be
    /// reported failed and retried, and its import still complete exactly once.
    pub panic_rate: f64,
    /// Whether each execution environment limits its items-table writes adaptively (AIMD on
    /// throttling) or at the fixed bound the configuration allows.
    pub adaptive: bool,
}

/// Everything the injectors and the downstream observed.
#[derive(Debug)]
pub struct Chaos {
    /// The knobs in effect.
    pub knobs: Knobs,
    /// The library's injectors: faults, kill points, and their counts.
    faults: Arc<Faults>,
    /// Successful `COMPLETED` commits per import id.
    completions: Mutex<HashMap<String, u64>>,
    /// Import ids whose `COMPLETED` commit was sent but its invocation killed before the
    /// answer: the commit may have been applied unseen.
    unseen_commits: Mutex<std::collections::HashSet<String>>,
    /// Messages handed to a second invocation (counted by the mapping).
    pub duplicated: Arc<AtomicU64>,
    circuit_openings: AtomicU64,
    /// Execution environments started (cold starts): one per concurrent invocation, and a new
    /// one after each killed or timed-out invocation, as on Lambda.
    environments: AtomicU64,
    /// Panics injected.
    panics: AtomicU64,
    /// Samples of each live environment's items-table concurrency limit: (sum, count).
    limits: Mutex<(u64, u64)>,
    /// The capacity-limited downstream.
    pub downstream: Downstream,
}

impl Chaos {
    /// The injectors for `knobs`.
    pub fn new(knobs: Knobs) -> Self {
        Self {
            knobs,
            faults: Arc::new(Faults::new(knobs.fault_rate)),
            completions: Mutex::default(),
            unseen_commits: Mutex::default(),
            duplicated: Arc::default(),
            circuit_openings: AtomicU64::new(0),
            environments: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            limits: Mutex::default(),
            downstream: Downstream::new(knobs.capacity, knobs.rate),
        }
    }
}

// ------------------------------------------------------------------------------------ kills

/// Where an invocation can be killed: before the claim, at an item write, between the last write
/// and the chunk's commit, between the commit and the claim's completion.
pub const KILL_POINTS: [&str; 4] = [BEFORE_THE_CLAIM, ITEM_WRITE, BEFORE_COMMIT, BEFORE_COMPLETE];

const ITEM_WRITE: &str = "at an item write";
const BEFORE_COMMIT: &str = "after the writes, before the commit";

/// The processor as the mapping's function, killed now and then.
///
/// Each invocation runs in an execution environment of its own, as on Lambda: an idle
/// environment if there is one (warm: its circuit breaker and concurrency limit remember earlier
/// invocations), else a new one (cold). An environment runs one invocation at a time; one whose
/// invocation was killed or timed out is discarded, as Lambda replaces a crashed runtime.
pub struct ChaosFunction {
    start: Box<dyn Fn() -> Arc<ChaosProcessor> + Send + Sync>,
    idle: Mutex<Vec<Arc<ChaosProcessor>>>,
    stats: Arc<Stats>,
    chaos: Arc<Chaos>,
    function_timeout: Duration,
}

impl Function for ChaosFunction {
    async fn invoke(&self, event: SqsEvent, deadline: SystemTime) -> Result<Value, String> {
        let knobs = self.chaos.knobs;
        let target = (knobs.kill_point_rate > 0.0 && fastrand::f64() < knobs.kill_point_rate)
            .then(|| KILL_POINTS[fastrand::usize(..KILL_POINTS.len())]);
        let timer = (knobs.kill_rate > 0.0 && fastrand::f64() < knobs.kill_rate).then(|| {
            let window = if fastrand::bool() {
                Duration::from_millis(300)
            } else {
                self.function_timeout
            };
            window.mul_f64(fastrand::f64())
        });
        let warm = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let environment = warm.unwrap_or_else(|| (self.start)());
        let processor = Processor::new(Arc::clone(&environment), Arc::clone(&self.stats));
        let work = self
            .chaos
            .faults
            .killable(target, processor.invoke(event, deadline));
        let random_kill = async {
            match timer {
                Some(after) => tokio::time::sleep(after).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ended = work => match ended {
                Ended::Finished(response) => {
                    if let Ok(mut idle) = self.idle.lock() {
                        idle.push(environment);
                    }
                    response
                }
                Ended::Killed(point) => Err(format!("killed (chaos) at {point}")),
            },
            () = random_kill => {
                self.chaos.faults.count_kill("random time");
                Err("killed (chaos) at a random time".into())
            }
        }
    }
}

// ------------------------------------------------------------------------------- the seams

/// The imports table (the processor's side), with faults, kill points and a count of commits
/// that completed an import.
pub struct ChaosResults<R> {
    inner: R,
    chaos: Arc<Chaos>,
}

impl<R: ImportResults> ImportResults for ChaosResults<R> {
    async fn record_chunk(
        &self,
        import_id: ImportId,
        chunk: u32,
        end: ChunkEnd<'_>,
        at: SystemTime,
    ) -> Result<Transition, StoreError> {
        self.chaos.faults.kill_point(BEFORE_COMMIT, 1.0).await;
        let lost = self.chaos.faults.fault("imports.record_chunk");
        if lost && fastrand::bool() {
            return Err(StoreError::Unavailable(injected("imports table")));
        }
        let completing = matches!(end, ChunkEnd::Completed { .. });
        let mut in_flight = completing.then(|| UnseenCommit {
            import_id: import_id.to_string(),
            chaos: &self.chaos,
            answered: false,
        });
        let result = self.inner.record_chunk(import_id, chunk, end, at).await;
        if let Some(commit) = &mut in_flight {
            commit.answered = true;
        }
        if matches!(result, Ok(Transition::Applied))
            && matches!(end, ChunkEnd::Completed { .. })
            && let Ok(mut completions) = self.chaos.completions.lock()
        {
            *completions.entry(import_id.to_string()).or_default() += 1;
        }
        if lost {
            // Response lost: the commit may have been applied.
            return Err(StoreError::Unavailable(injected("imports table")));
        }
        result
    }

    async fn begin(
        &self,
        import_id: ImportId,
        object_key: &ObjectKey,
        format: ImportFormat,
        etag: &str,
        at: SystemTime,
    ) -> Result<Start, StoreError> {
        if self.chaos.faults.fault("imports.begin") {
            if fastrand::bool() {
                // Response lost: the import may be started, the worker does not know.
                let _ = self
                    .inner
                    .begin(import_id, object_key, format, etag, at)
                    .await;
            }
            return Err(StoreError::Unavailable(injected("imports table")));
        }
        self.inner
            .begin(import_id, object_key, format, etag, at)
            .await
    }

    async fn progress(&self, import_id: ImportId) -> Result<Option<Progress>, StoreError> {
        if self.chaos.faults.fault("imports.progress") {
            return Err(StoreError::Unavailable(injected("imports table")));
        }
        self.inner.progress(import_id).await
    }

    async fn mark_failed(
        &self,
        import_id: ImportId,
        reason: &str,
        at: SystemTime,
    ) -> Result<Transition, StoreError> {
        if self.chaos.faults.fault("imports.mark_failed") {
            return Err(StoreError::Unavailable(injected("imports table")));
        }
        self.inner.mark_failed(import_id, reason, at).await
    }
}

/// Notes an import's `COMPLETED` commit as possibly applied unseen when dropped, that is when
/// the invocation is killed while the commit is in flight.
struct UnseenCommit<'a> {
    import_id: String,
    chaos: &'a Chaos,
    answered: bool,
}

impl Drop for UnseenCommit<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        if let Ok(mut unseen) = self.chaos.unseen_commits.lock() {
            unseen.insert(std::mem::take(&mut self.import_id));
        }
    }
}

/// S3, with failed opens and streams cut mid-object.
pub struct ChaosSource<O> {
    inner: O,
    chaos: Arc<Chaos>,
}

impl<O: ObjectSource> ObjectSource for ChaosSource<O> {
    async fn open(
        &self,
        key: &ObjectKey,
        from: Option<ReadFrom<'_>>,
    ) -> Result<Opened, SourceError> {
        if self.chaos.faults.fault("s3.get_object") {
            return Err(SourceError::Unavailable(injected("S3 GetObject")));
        }
        let mut opened = self.inner.open(key, from).await?;
        let cut_rate = self.chaos.knobs.cut_rate;
        if cut_rate > 0.0 && fastrand::f64() < cut_rate {
            // Half the cuts early (small files are a few hundred bytes), half anywhere in the
            // first 512 KiB. A cut past the object's end never fires.
            let limit = if fastrand::bool() { 512 } else { 512 * 1024 };
            opened.body = Box::new(CutBody {
                inner: opened.body,
                remaining: fastrand::u64(0..limit),
                chaos: Arc::clone(&self.chaos),
            });
        }
        Ok(opened)
    }
}

/// A body that fails with a reset connection after `remaining` bytes.
struct CutBody {
    inner: import_processor::ObjectBody,
    remaining: u64,
    chaos: Arc<Chaos>,
}

impl CutBody {
    fn cut(&self) -> io::Error {
        self.chaos.faults.count_fault("s3.stream_cut");
        io::Error::new(
            io::ErrorKind::ConnectionReset,
            "injected fault (chaos): the S3 stream was cut mid-object",
        )
    }
}

impl AsyncRead for CutBody {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let max = usize::try_from(this.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.remaining());
        if max == 0 && buf.remaining() > 0 {
            // Tell the end of the object from the cut: only data beyond it is cut.
            let mut probe = [0u8; 1];
            let mut probe_buf = ReadBuf::new(&mut probe);
            return match Pin::new(&mut this.inner).poll_read(cx, &mut probe_buf) {
                Poll::Ready(Ok(())) if probe_buf.filled().is_empty() => Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => Poll::Ready(Err(this.cut())),
                other => other,
            };
        }
        let mut tmp = vec![0u8; max];
        let mut sub = ReadBuf::new(&mut tmp);
        match Pin::new(&mut this.inner).poll_read(cx, &mut sub) {
            Poll::Ready(Ok(())) => {
                let n = sub.filled().len();
                buf.put_slice(&tmp[..n]);
                this.remaining -= n as u64;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncBufRead for CutBody {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        let remaining = this.remaining;
        if remaining == 0 {
            let chaos = Arc::clone(&this.chaos);
            return match Pin::new(&mut this.inner).poll_fill_buf(cx) {
                Poll::Ready(Ok([])) => Poll::Ready(Ok(&[])),
                Poll::Ready(Ok(_)) => {
                    chaos.faults.count_fault("s3.stream_cut");
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        "injected fault (chaos): the S3 stream was cut mid-object",
                    )))
                }
                other => other,
            };
        }
        match Pin::new(&mut this.inner).poll_fill_buf(cx) {
            Poll::Ready(Ok(bytes)) => {
                let n = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                Poll::Ready(Ok(&bytes[..n]))
            }
            other => other,
        }
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.remaining = this.remaining.saturating_sub(amt as u64);
        Pin::new(&mut this.inner).consume(amt);
    }
}

// --------------------------------------------------------------- the capacity-limited downstream

/// A downstream that admits at most `capacity` concurrent requests and `rate` requests/s.
#[derive(Debug)]
pub struct Downstream {
    capacity: usize,
    rate: f64,
    burst: f64,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    bucket: Mutex<(f64, Instant)>,
    started: Instant,
    /// Per second since start: (successful requests, throttled requests).
    seconds: Mutex<Vec<(u64, u64)>>,
    /// Per second since start: the callers' demand, as the integral of the calls pending at
    /// every environment's items-table dependency (in flight, waiting for a place, or waiting
    /// to try again) over the second, i.e. the mean number of calls pending; then the same of
    /// the calls in flight, of the environments' concurrency limits and of the places their
    /// pending calls could use (per environment, the smaller of its limit and its pending calls).
    demand: Mutex<Vec<[f64; 4]>>,
    throttled_concurrency: AtomicU64,
    throttled_rate: AtomicU64,
    failed: AtomicU64,
    latency_micros: AtomicU64,
    /// Successful writes per import id and SKU.
    rows: Mutex<HashMap<String, HashMap<String, u32>>>,
    /// The fake partner API's items by SKU: the last value written of each, as a table keeps
    /// it (empty when the downstream is the items table).
    items: Mutex<HashMap<String, Stored>>,
}

impl Downstream {
    fn new(capacity: usize, rate: f64) -> Self {
        let burst = (rate * 0.1).max(1.0);
        Self {
            capacity: capacity.max(1),
            rate,
            burst,
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            bucket: Mutex::new((burst, Instant::now())),
            started: Instant::now(),
            seconds: Mutex::default(),
            demand: Mutex::default(),
            throttled_concurrency: AtomicU64::new(0),
            throttled_rate: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            latency_micros: AtomicU64::new(0),
            rows: Mutex::default(),
            items: Mutex::default(),
        }
    }

    fn take_token(&self) -> bool {
        let Ok(mut bucket) = self.bucket.lock() else {
            return false;
        };
        let now = Instant::now();
        let (tokens, last) = *bucket;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
        if tokens >= 1.0 {
            *bucket = (tokens - 1.0, now);
            true
        } else {
            *bucket = (tokens, now);
            false
        }
    }

    fn tally(&self, ok: bool) {
        let second = self.started.elapsed().as_secs() as usize;
        if let Ok(mut seconds) = self.seconds.lock() {
            if seconds.len() <= second {
                seconds.resize(second + 1, (0, 0));
            }
            if ok {
                seconds[second].0 += 1;
            } else {
                seconds[second].1 += 1;
            }
        }
    }

    /// Adds `pending` calls, `in_flight` of them in flight under a concurrency limit of
    /// `limit`, lasting `dt`, to the demand of the current second.
    fn demand(&self, pending: usize, in_flight: usize, limit: usize, dt: Duration) {
        let usable = pending.min(limit);
        let second = self.started.elapsed().as_secs() as usize;
        if let Ok(mut demand) = self.demand.lock() {
            if demand.len() <= second {
                demand.resize(second + 1, [0.0; 4]);
            }
            let dt = dt.as_secs_f64();
            let sample = [pending, in_flight, limit, usable];
            for (sum, value) in demand[second].iter_mut().zip(sample) {
                *sum += value as f64 * dt;
            }
        }
    }

    /// Per second since start, for the report: `[second, successful requests, throttled
    /// requests, calls pending, calls in flight, the environments' concurrency limits, places
    /// usable]`, the last four as means over the second, summed over the environments. A limit
    /// that binds shows as calls in flight close to the places usable, below the calls pending.
    fn per_second(&self) -> Vec<serde_json::Value> {
        let seconds = self.seconds.lock().map(|s| s.clone()).unwrap_or_default();
        let demand = self.demand.lock().map(|d| d.clone()).unwrap_or_default();
        let round = |x: f64| (x * 100.0).round() / 100.0;
        (0..seconds.len().max(demand.len()))
            .map(|i| {
                let (ok, throttled) = seconds.get(i).copied().unwrap_or_default();
                let [pending, in_flight, limit, usable] =
                    demand.get(i).copied().unwrap_or_default();
                json!([
                    i,
                    ok,
                    throttled,
                    round(pending),
                    round(in_flight),
                    round(limit),
                    round(usable)
                ])
            })
            .collect()
    }

    fn throttle(&self, counter: &AtomicU64, why: &str) -> WriteError {
        counter.fetch_add(1, Ordering::Relaxed);
        self.tally(false);
        WriteError::Throttled(format!("throttled (chaos downstream): {why}").into())
    }
}

/// Releases a concurrency slot when the request ends, also when its future is dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The items writer behind the capacity-limited downstream.
pub struct CapacityWriter<W> {
    inner: W,
    chaos: Arc<Chaos>,
}

impl<W: ItemWriter> ItemWriter for CapacityWriter<W> {
    async fn write(&self, import_id: ImportId, rows: &[Row]) -> Result<(), WriteError> {
        // At a write: after ~50 writes on average.
        self.chaos.faults.kill_point(ITEM_WRITE, 0.02).await;
        let panic_rate = self.chaos.knobs.panic_rate;
        if panic_rate > 0.0 && fastrand::f64() < panic_rate {
            self.chaos.panics.fetch_add(1, Ordering::Relaxed);
            panic!("injected panic (chaos) in an item write");
        }
        let down = &self.chaos.downstream;
        let admitted = down
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < down.capacity).then_some(n + 1)
            });
        let now = match admitted {
            Ok(before) => before + 1,
            Err(_) => {
                return Err(
                    down.throttle(&down.throttled_concurrency, "too many concurrent requests")
                );
            }
        };
        let slot = InFlight(&down.in_flight);
        if !down.take_token() {
            drop(slot);
            return Err(down.throttle(&down.throttled_rate, "request rate exceeded"));
        }
        down.peak.fetch_max(now, Ordering::SeqCst);
        let started = Instant::now();
        let latency = self.chaos.knobs.latency;
        let result = if latency.is_zero() {
            self.inner.write(import_id, rows).await
        } else {
            tokio::time::sleep(latency).await;
            // Applied when it answers, so a write dropped in flight (a kill) is not applied.
            if let Ok(mut items) = down.items.lock() {
                let import_id = import_id.to_string();
                for row in rows {
                    let stored = Stored {
                        import_id: import_id.clone(),
                        row: row.clone(),
                    };
                    items.insert(row.sku.clone(), stored);
                }
            }
            Ok(())
        };
        drop(slot);
        match &result {
            Ok(()) => {
                down.latency_micros.fetch_add(
                    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                down.tally(true);
                if let Ok(mut written) = down.rows.lock() {
                    let per_sku = written.entry(import_id.to_string()).or_default();
                    for row in rows {
                        *per_sku.entry(row.sku.clone()).or_default() += 1;
                    }
                }
            }
            Err(_) => {
                down.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }
}

/// What the downstream measured.
#[derive(Debug, Clone)]
struct Goodput {
    peak: usize,
    successes: u64,
    throttled_concurrency: u64,
    throttled_rate: u64,
    mean_latency_ms: f64,
    /// min(R, C / mean latency).
    bound: f64,
    /// Successful requests/s over the seconds the callers kept enough calls pending to reach
    /// the bound (saturated: demand >= bound x mean latency, Little's law).
    saturated: Option<f64>,
    saturated_seconds: usize,
    /// Seconds in which the downstream throttled at least once.
    throttling_seconds: usize,
    /// Successful requests/s over the middle 80% of the writing period.
    steady: f64,
}

impl Downstream {
    fn goodput(&self) -> Goodput {
        let seconds = self.seconds.lock().map(|s| s.clone()).unwrap_or_default();
        let successes: u64 = seconds.iter().map(|s| s.0).sum();
        let first = seconds.iter().position(|s| s.0 > 0);
        let last = seconds.iter().rposition(|s| s.0 > 0);
        let demand = self.demand.lock().map(|d| d.clone()).unwrap_or_default();
        let mean_latency_ms = if successes > 0 {
            self.latency_micros.load(Ordering::Relaxed) as f64 / successes as f64 / 1000.0
        } else {
            0.0
        };
        let by_concurrency = if mean_latency_ms > 0.0 {
            self.capacity as f64 / (mean_latency_ms / 1000.0)
        } else {
            f64::INFINITY
        };
        let bound = self.rate.min(by_concurrency);
        // The calls that must be pending at once to reach the bound.
        let enough = bound * mean_latency_ms / 1000.0;
        let (mut steady, mut saturated, mut saturated_seconds) = (0.0, None, 0);
        let mut throttling_seconds = 0;
        if let (Some(first), Some(last)) = (first, last) {
            let span = last - first + 1;
            let (from, to) = (first + span / 10, last + 1 - span / 10);
            let window = &seconds[from..to.max(from + 1).min(seconds.len())];
            steady = window.iter().map(|s| s.0).sum::<u64>() as f64 / window.len() as f64;
            // The first and last second are partial: leave them out.
            let inner = if span > 2 {
                &seconds[first + 1..last]
            } else {
                &seconds[first..=last]
            };
            let offset = if span > 2 { first + 1 } else { first };
            throttling_seconds = inner.iter().filter(|s| s.1 > 0).count();
            let busy: Vec<u64> = inner
                .iter()
                .enumerate()
                .filter(|(i, _)| demand.get(offset + i).is_some_and(|d| d[0] >= enough))
                .map(|(_, s)| s.0)
                .collect();
            saturated_seconds = busy.len();
            if !busy.is_empty() {
                saturated = Some(busy.iter().sum::<u64>() as f64 / busy.len() as f64);
            }
        }
        Goodput {
            peak: self.peak.load(Ordering::SeqCst),
            successes,
            throttled_concurrency: self.throttled_concurrency.load(Ordering::Relaxed),
            throttled_rate: self.throttled_rate.load(Ordering::Relaxed),
            mean_latency_ms,
            bound,
            saturated,
            saturated_seconds,
            throttling_seconds,
            steady,
        }
    }
}

// ------------------------------------------------------------------------------ wiring

/// The record handler with every seam wrapped.
pub type ChaosHandler = Idempotent<
    ImportWorker<
        ChaosSource<S3ObjectSource>,
        CapacityWriter<DynamoDbItems>,
        ChaosResults<DynamoDbImports>,
    >,
    FaultyStore<DynamoDbStore>,
    FaultyJobs<Option<SqsJobQueue>>,
>;

/// The processor with every seam wrapped.
pub type ChaosProcessor = BatchProcessor<ChaosHandler, FaultyQueue<SqsQueueActions>>;

/// Builds the production processor (`import_processor::Parts`), each seam behind its injector:
/// once per execution environment, when the function starts one.
pub fn function(
    config: &ProcessorConfig,
    sdk: &SdkConfig,
    chaos: &Arc<Chaos>,
    stats: &Arc<Stats>,
    function_timeout: Duration,
) -> ChaosFunction {
    let (config, sdk, chaos_of_start) = (config.clone(), sdk.clone(), Arc::clone(chaos));
    // The items table's bound in one environment: records at once x writes in flight each.
    let bound = config.worker.batch.concurrency.get() * config.item_writes_in_flight.get();
    let concurrency = if chaos.knobs.adaptive {
        Concurrency::Adaptive { max: bound }
    } else {
        Concurrency::Fixed { max: bound }
    };
    let start = move || {
        let chaos = &chaos_of_start;
        chaos.environments.fetch_add(1, Ordering::Relaxed);
        let Parts {
            guard,
            source,
            writer,
            imports,
            jobs,
            queue,
            config,
        } = Parts::new(&config, &sdk);
        let processor = Parts {
            guard: FaultyStore {
                inner: guard,
                faults: Arc::clone(&chaos.faults),
            },
            source: ChaosSource {
                inner: source,
                chaos: Arc::clone(chaos),
            },
            writer: CapacityWriter {
                inner: writer,
                chaos: Arc::clone(chaos),
            },
            imports: ChaosResults {
                inner: imports,
                chaos: Arc::clone(chaos),
            },
            jobs: FaultyJobs {
                inner: jobs,
                faults: Arc::clone(&chaos.faults),
            },
            queue: FaultyQueue {
                inner: queue,
                faults: Arc::clone(&chaos.faults),
            },
            config,
        }
        .build();
        processor
            .handler()
            .worker()
            .items_table()
            .concurrency_limit()
            .set_policy(concurrency);
        let processor = Arc::new(processor);
        watch_environment(Arc::downgrade(&processor), Arc::clone(chaos));
        processor
    };
    ChaosFunction {
        start: Box::new(start),
        idle: Mutex::default(),
        stats: Arc::clone(stats),
        chaos: Arc::clone(chaos),
        function_timeout,
    }
}

/// Counts the items table's circuit openings of one environment and samples its concurrency
/// limit, every 5 ms while the environment lives.
fn watch_environment(processor: Weak<ChaosProcessor>, chaos: Arc<Chaos>) {
    tokio::spawn(async move {
        let mut was_open = false;
        let mut sampled = Instant::now();
        loop {
            let Some(processor) = processor.upgrade() else {
                return;
            };
            let items_table = processor.handler().worker().items_table();
            let open = items_table.is_circuit_open();
            let limit = items_table.concurrency_limit().limit();
            let in_flight = items_table.concurrency_limit().in_flight();
            let pending = items_table.pending_calls();
            drop(processor);
            chaos
                .downstream
                .demand(pending, in_flight, limit, sampled.elapsed());
            sampled = Instant::now();
            if open && !was_open {
                chaos.circuit_openings.fetch_add(1, Ordering::Relaxed);
            }
            was_open = open;
            if let Ok(mut limits) = chaos.limits.lock() {
                limits.0 += limit as u64;
                limits.1 += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}

// ------------------------------------------------------------------------------- the soak

/// Runs the soak on a started chaos pipeline; `Ok` when every correctness check passed.
/// Writes the outcome as JSON to `report`.
pub async fn run(
    pipeline: &Pipeline,
    chaos: &Chaos,
    burst: Burst,
    report: &Path,
) -> anyhow::Result<()> {
    let requests = demo::plan(&burst);
    println!("generating and uploading sample files...");
    let samples = demo::upload_files(pipeline, &requests, burst).await?;
    let k = chaos.knobs;
    println!(
        "chaos soak: {} requests, maximum concurrency {}, function timeout {} s, visibility \
         timeout {} s; kills {}/invocation + {}/kill point; duplicates {}; AWS faults {}; \
         S3 cuts {}; downstream C={} R={}/s, {} ({}); panics {}",
        burst.imports,
        burst.maximum_concurrency,
        pipeline.function_timeout.as_secs_f64(),
        k.visibility_timeout.as_secs(),
        k.kill_rate,
        k.kill_point_rate,
        k.duplicate_rate,
        k.fault_rate,
        k.cut_rate,
        k.capacity,
        k.rate,
        if k.latency.is_zero() {
            "the items table".to_owned()
        } else {
            format!("a fake partner API taking {} ms", k.latency.as_millis())
        },
        if k.adaptive {
            "adaptive concurrency limit"
        } else {
            "fixed concurrency limit"
        },
        k.panic_rate,
    );
    let started = std::time::Instant::now();
    let (accepted, replays) = demo::fire(pipeline, &requests, &samples, burst).await?;
    println!(
        "{} requests: {} imports accepted, {} replays",
        burst.imports,
        accepted.len(),
        replays
    );
    // A soak that does not drain in time is still checked and reported: what is unfinished
    // at the timeout is a finding too.
    let watched = demo::watch(
        pipeline,
        accepted.len() as u64,
        burst.drain_timeout,
        started,
    )
    .await;
    let (drained_in, drained) = match watched {
        Ok(drained_in) => (drained_in, true),
        Err(e) => {
            eprintln!("{e:#}");
            (started.elapsed(), false)
        }
    };
    let (problems, summary) = check(
        pipeline,
        chaos,
        &accepted,
        replays,
        (drained_in, drained),
        burst,
    )
    .await?;
    if let Some(dir) = report.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(report, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("writing {}", report.display()))?;
    println!("written: {}", report.display());
    if problems.is_empty() {
        println!("chaos check passed");
        Ok(())
    } else {
        let (unfinished, others): (Vec<&String>, Vec<&String>) =
            problems.iter().partition(|p| p.contains("unfinished"));
        for problem in others.iter().chain(&unfinished).take(30) {
            eprintln!("check failed: {problem}");
        }
        bail!("{} problems", problems.len())
    }
}

/// The columns `make chaos` prints for one run of the report `report` (infra/chaos.sh prints
/// each report's `summary` in the order of `summary_columns`).
fn table_columns(report: &Value) -> Vec<(String, Value)> {
    let number = |value: &Value| value.as_u64().unwrap_or(0);
    let sum = |value: &Value| {
        value
            .as_object()
            .map_or(0, |counts| counts.values().map(number).sum::<u64>())
    };
    let downstream = &report["downstream"];
    let goodput = downstream["goodput_fraction"]
        .as_f64()
        .map_or_else(|| "n/a".to_owned(), |g| format!("{:.0}%", g * 100.0));
    // Every SKU of the completed imports compared with the last row of its file that names it.
    let rows_ok = report["skus_checked"] == report["items_expected"]
        && number(&report["stray_rows"]) == 0
        && number(&report["value_mismatches"]) == 0;
    [
        ("conc", report["maximum_concurrency"].clone()),
        (
            "limit",
            json!(format!(
                "{} {:.1}",
                report["concurrency_limit"].as_str().unwrap_or("?"),
                report["mean_concurrency_limit"].as_f64().unwrap_or(0.0)
            )),
        ),
        ("accepted", report["accepted"].clone()),
        (
            "done+poison",
            json!(format!(
                "{}+{}",
                report["completed"], report["failed_poison"]
            )),
        ),
        (
            "lost",
            json!(number(&report["lost"]) + number(&report["failed_not_poison"])),
        ),
        ("unfinished", report["unfinished_at_timeout"].clone()),
        ("twice", report["completed_twice"].clone()),
        ("rows ok", json!(rows_ok)),
        (
            "peak/C",
            json!(format!(
                "{}/{}",
                downstream["peak_concurrency"], downstream["capacity"]
            )),
        ),
        ("goodput", json!(goodput)),
        (
            "drain s",
            json!(format!(
                "{:.0}",
                report["drain_seconds"].as_f64().unwrap_or(f64::NAN)
            )),
        ),
        ("retries", report["retries"].clone()),
        (
            "throttled",
            json!(
                number(&downstream["throttled_concurrency"])
                    + number(&downstream["throttled_rate"])
            ),
        ),
        ("parked", json!(sum(&report["parked_by_class"]))),
        ("circuit", report["circuit_openings"].clone()),
        ("kills", json!(sum(&report["kills"]))),
        ("dups", report["duplicate_deliveries"].clone()),
        ("panics", report["records_panicked"].clone()),
        ("faults", json!(sum(&report["faults"]))),
        ("pass", report["check_passed"].clone()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// Checks every import and the downstream's measurements; returns the problems and the report.
async fn check(
    pipeline: &Pipeline,
    chaos: &Chaos,
    accepted: &[Accepted],
    replays: usize,
    (drained_in, drained): (Duration, bool),
    burst: Burst,
) -> anyhow::Result<(Vec<String>, Value)> {
    let http = reqwest::Client::new();
    let mut problems = Vec::new();
    let (mut completed, mut failed_poison, mut lost, mut wrongly_failed) = (0u64, 0u64, 0u64, 0u64);
    let (mut rows_expected, mut items_expected, mut chunks, mut continued) = (0, 0, 0, 0u64);
    // What each completed import must have left downstream.
    let mut expected: Vec<(&str, Expected)> = Vec::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    // Every import's record first, then what the injectors saw: when the soak did not drain,
    // imports still complete meanwhile, and a record read before its writes and commit were
    // counted would look like an import completed unseen.
    let mut views = Vec::with_capacity(accepted.len());
    for import in accepted {
        let view: Value = http
            .get(format!("{}/imports/{}", pipeline.base_url, import.id))
            .send()
            .await?
            .json()
            .await?;
        views.push(view);
    }
    let rows = chaos
        .downstream
        .rows
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    let unseen = chaos
        .unseen_commits
        .lock()
        .map(|u| u.clone())
        .unwrap_or_default();
    let mut completed_unseen = 0u64;
    let completions = chaos
        .completions
        .lock()
        .map(|c| c.clone())
        .unwrap_or_default();
    let mut rows_written_checked = 0u64;
    for (import, view) in accepted.iter().zip(&views) {
        let (id, sample) = (import.id.as_str(), &import.sample);
        let status = view["status"].as_str().unwrap_or("none").to_owned();
        *statuses.entry(status.clone()).or_default() += 1;
        match (status.as_str(), sample.kind) {
            ("COMPLETED", Kind::Small | Kind::Large) => {
                completed += 1;
                rows_expected += sample.valid;
                let c = view["chunks"].as_u64().unwrap_or(0);
                chunks += c;
                continued += u64::from(c > 1);
                let (written, rejected) =
                    (view["rowsWritten"].as_u64(), view["rowsRejected"].as_u64());
                if written != Some(sample.valid) || rejected != Some(sample.invalid) {
                    problems.push(format!(
                        "import {id} of {} recorded {written:?} written, {rejected:?} rejected; the file has {} valid, {} invalid",
                        sample.key, sample.valid, sample.invalid
                    ));
                }
                // A file repeats its SKUs: one item per SKU with a valid row.
                let want = sample.contents.map(|c| c.expected()).unwrap_or_default();
                let distinct = rows.get(id).map_or(0, |r| r.len() as u64);
                rows_written_checked += distinct;
                items_expected += want.items();
                if distinct != want.items() {
                    problems.push(format!(
                        "import {id} of {}: the downstream got {distinct} distinct SKUs, the file has {} with a valid row",
                        sample.key,
                        want.items()
                    ));
                }
                expected.push((id, want));
                let commits = completions.get(id).copied().unwrap_or(0);
                if commits == 0 && unseen.contains(id) {
                    // Killed with its commit in flight: applied, never answered.
                    completed_unseen += 1;
                } else if commits != 1 {
                    problems.push(format!(
                        "import {id} was committed COMPLETED {commits} times (want exactly 1)"
                    ));
                }
            }
            ("FAILED", Kind::Poison) if view["error"].is_string() => failed_poison += 1,
            ("FAILED", _) => {
                wrongly_failed += 1;
                problems.push(format!(
                    "import {id} ({:?} file {}) FAILED: {}",
                    sample.kind, sample.key, view["error"]
                ));
            }
            (status, kind) => {
                lost += 1;
                let what = if drained {
                    "lost"
                } else {
                    "unfinished at the timeout"
                };
                problems.push(format!(
                    "import {id} ({kind:?} file {}) ended {status}: {what}",
                    sample.key
                ));
            }
        }
    }
    let values = if chaos.knobs.latency.is_zero() {
        let table = pipeline
            .resources
            .reference("ItemsTable")
            .context("the items table")?;
        sample::check_table(&pipeline.clients.dynamodb, table, &expected).await?
    } else {
        let items =
            chaos.downstream.items.lock().map_err(|_| {
                anyhow::anyhow!("the downstream's items lock was poisoned by a panic")
            })?;
        ValueCheck::of(expected.iter().map(|(id, e)| (*id, e)), &items)
    };
    problems.extend(values.problem());
    let completed_twice = completions.values().filter(|n| **n > 1).count() as u64;
    let ids: std::collections::HashSet<&str> = accepted
        .iter()
        .filter(|a| a.sample.kind != Kind::Poison)
        .map(|a| a.id.as_str())
        .collect();
    let strays: u64 = rows
        .iter()
        .filter(|(id, _)| !ids.contains(id.as_str()))
        .map(|(_, r)| r.len() as u64)
        .sum();
    if strays > 0 {
        problems.push(format!(
            "the downstream got {strays} rows of imports that are not completed file imports"
        ));
    }
    let parked_ids = demo::parked_import_ids(pipeline).await?;
    let mut poison_not_parked = 0u64;
    for import in accepted.iter().filter(|a| a.sample.kind == Kind::Poison) {
        if !parked_ids.contains(&import.id) {
            poison_not_parked += 1;
            problems.push(format!("poison import {} is not in the DLQ", import.id));
        }
    }
    let g = chaos.downstream.goodput();
    if g.peak > chaos.knobs.capacity {
        problems.push(format!(
            "the downstream's peak concurrency {} is over C={}",
            g.peak, chaos.knobs.capacity
        ));
    }
    let row_writes: u64 = rows
        .values()
        .flat_map(|r| r.values())
        .map(|n| u64::from(*n))
        .sum();
    let distinct_rows: u64 = rows.values().map(|r| r.len() as u64).sum();
    let fraction = g.saturated.map(|s| s / g.bound);
    let stats = &pipeline.stats;
    let (invocations, failed_invocations) = stats.invocations();
    let kills = chaos.faults.kills();
    let faults = chaos.faults.injected();
    let parked = chaos.faults.parked();
    let seconds = drained_in.as_secs_f64();
    let mean_limit = chaos
        .limits
        .lock()
        .map(|l| {
            if l.1 > 0 {
                l.0 as f64 / l.1 as f64
            } else {
                0.0
            }
        })
        .unwrap_or(0.0);
    let summary = json!({
        "requests": burst.imports,
        "maximum_concurrency": burst.maximum_concurrency,
        "function_timeout_seconds": pipeline.function_timeout.as_secs_f64(),
        "visibility_timeout_seconds": chaos.knobs.visibility_timeout.as_secs(),
        "knobs": {
            "kill_rate": chaos.knobs.kill_rate,
            "kill_point_rate": chaos.knobs.kill_point_rate,
            "duplicate_rate": chaos.knobs.duplicate_rate,
            "fault_rate": chaos.knobs.fault_rate,
            "cut_rate": chaos.knobs.cut_rate,
            "capacity": chaos.knobs.capacity,
            "rate": chaos.knobs.rate,
        },
        "accepted": accepted.len(),
        "replays": replays,
        "statuses": statuses,
        "completed": completed,
        "failed_poison": failed_poison,
        "failed_not_poison": wrongly_failed,
        "drained": drained,
        "lost": if drained { lost } else { 0 },
        "unfinished_at_timeout": if drained { 0 } else { lost },
        "completed_twice": completed_twice,
        "completed_by_a_killed_commit": completed_unseen,
        "poison_not_in_dlq": poison_not_parked,
        "rows_expected": rows_expected,
        "distinct_skus_written": distinct_rows,
        "row_writes": row_writes,
        "rows_of_completed_imports_checked": rows_written_checked,
        "stray_rows": strays,
        "chunks": chunks,
        "continued_imports": continued,
        "stalled_chunks": stats.stalls(),
        "downstream": {
            "capacity": chaos.knobs.capacity,
            "rate": chaos.knobs.rate,
            "peak_concurrency": g.peak,
            "successful_requests": g.successes,
            "throttled_concurrency": g.throttled_concurrency,
            "throttled_rate": g.throttled_rate,
            "mean_latency_ms": g.mean_latency_ms,
            "bound_requests_per_second": g.bound,
            "goodput_saturated_requests_per_second": g.saturated,
            "saturated_seconds": g.saturated_seconds,
            "throttling_seconds": g.throttling_seconds,
            "goodput_fraction": fraction,
            "steady_requests_per_second": g.steady,
            "per_second": chaos.downstream.per_second(),
        },
        "drain_seconds": seconds,
        "invocations": invocations,
        "failed_invocations": failed_invocations,
        "timed_out_invocations": stats.timed_out_invocations(),
        "records": RecordStatus::ALL.iter().map(|s| (format!("{s:?}"), stats.count(*s))).collect::<BTreeMap<_, _>>(),
        "retries": stats.count(RecordStatus::Retried) + stats.count(RecordStatus::Panicked),
        "parked_by_class": parked,
        "circuit_openings": chaos.circuit_openings.load(Ordering::Relaxed),
        "kills": kills,
        "duplicate_deliveries": chaos.duplicated.load(Ordering::Relaxed),
        "faults": faults,
        "problems": problems.len(),
        // Unfinished imports last: the others say more.
        "problem_list": problems
            .iter()
            .filter(|p| !p.contains("unfinished"))
            .chain(problems.iter().filter(|p| p.contains("unfinished")))
            .take(200)
            .collect::<Vec<_>>(),
        "check_passed": problems.is_empty(),
    });
    let mut summary = summary;
    let limit_mode = if chaos.knobs.adaptive {
        "adaptive"
    } else {
        "fixed"
    };
    summary["knobs"]["panic_rate"] = json!(chaos.knobs.panic_rate);
    summary["knobs"]["downstream_latency_ms"] = json!(chaos.knobs.latency.as_millis() as u64);
    summary["concurrency_limit"] = json!(limit_mode);
    summary["mean_concurrency_limit"] = json!(mean_limit);
    summary["environments_started"] = json!(chaos.environments.load(Ordering::Relaxed));
    summary["panics"] = json!(chaos.panics.load(Ordering::Relaxed));
    summary["items_expected"] = json!(items_expected);
    summary["skus_checked"] = json!(values.skus);
    summary["value_mismatches"] = json!(values.mismatches);
    summary["records_panicked"] = json!(stats.count(RecordStatus::Panicked));
    let columns = table_columns(&summary);
    summary["summary"] = Value::Object(columns.iter().cloned().collect());
    // JSON objects have no order: `make chaos`'s table columns, in order.
    summary["summary_columns"] = json!(columns.iter().map(|(name, _)| name).collect::<Vec<_>>());
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(110)
        .set_header(["", "measured"]);
    let pct = |x: Option<f64>| {
        x.map_or("n/a (never saturated)".into(), |x| {
            format!("{:.0}%", x * 100.0)
        })
    };
    let lines: Vec<(&str, String)> = vec![
        (
            "imports accepted (replays)",
            format!("{} ({replays})", accepted.len()),
        ),
        (
            "COMPLETED + FAILED poison",
            format!(
                "{completed} + {failed_poison} = {}",
                completed + failed_poison
            ),
        ),
        (
            if drained {
                "lost / FAILED not poison"
            } else {
                "UNFINISHED at the timeout / FAILED not poison"
            },
            format!("{lost} / {wrongly_failed}"),
        ),
        (
            "completed twice (completed by a commit killed in flight)",
            format!("{completed_twice} ({completed_unseen})"),
        ),
        (
            "rows written: expected / writes at the downstream",
            format!("{rows_expected} / {row_writes}"),
        ),
        (
            "SKUs: expected / distinct at the downstream / holding a wrong value",
            format!("{items_expected} / {distinct_rows} / {}", values.mismatches),
        ),
        (
            "stray rows; poison not in DLQ",
            format!("{strays}; {poison_not_parked}"),
        ),
        (
            "chunks (imports continued; chunks that stalled)",
            format!("{chunks} ({continued}; {})", stats.stalls()),
        ),
        (
            "downstream peak concurrency (C)",
            format!("{} ({})", g.peak, chaos.knobs.capacity),
        ),
        (
            "throttled: concurrency / rate",
            format!("{} / {}", g.throttled_concurrency, g.throttled_rate),
        ),
        ("mean write latency", format!("{:.1} ms", g.mean_latency_ms)),
        ("bound min(R, C/latency)", format!("{:.0} req/s", g.bound)),
        (
            "goodput while saturated (callers keep >= bound x latency calls pending)",
            format!(
                "{} req/s over {} s = {}",
                g.saturated.map_or("-".into(), |s| format!("{s:.0}")),
                g.saturated_seconds,
                pct(fraction)
            ),
        ),
        ("seconds with throttling", g.throttling_seconds.to_string()),
        (
            "goodput, middle 80% of writing",
            format!("{:.0} req/s", g.steady),
        ),
        (
            "drain time",
            if drained {
                format!("{seconds:.1} s")
            } else {
                format!("not drained in {seconds:.1} s")
            },
        ),
        (
            "invocations (whole-batch failures; timed out)",
            format!(
                "{invocations} ({failed_invocations}; {})",
                stats.timed_out_invocations()
            ),
        ),
        (
            "records retried",
            (stats.count(RecordStatus::Retried) + stats.count(RecordStatus::Panicked)).to_string(),
        ),
        (
            "duplicates acknowledged",
            stats.count(RecordStatus::Duplicate).to_string(),
        ),
        ("parked by class", format!("{parked:?}")),
        (
            "circuit openings (items table)",
            chaos.circuit_openings.load(Ordering::Relaxed).to_string(),
        ),
        (
            "items-table concurrency limit per environment (mean of samples)",
            format!(
                "{limit_mode} {mean_limit:.1} over {} environments started",
                chaos.environments.load(Ordering::Relaxed)
            ),
        ),
        (
            "panics injected / records reported panicked",
            format!(
                "{} / {}",
                chaos.panics.load(Ordering::Relaxed),
                stats.count(RecordStatus::Panicked)
            ),
        ),
        ("kills", format!("{kills:?}")),
        (
            "duplicate deliveries",
            chaos.duplicated.load(Ordering::Relaxed).to_string(),
        ),
        ("faults injected", format!("{faults:?}")),
    ];
    for (name, value) in lines {
        table.add_row([name.to_owned(), value]);
    }
    println!("{table}");
    Ok((problems, summary))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    fn knobs(capacity: usize, rate: f64) -> Knobs {
        Knobs {
            kill_rate: 0.0,
            kill_point_rate: 0.0,
            duplicate_rate: 0.0,
            fault_rate: 0.0,
            cut_rate: 0.0,
            capacity,
            rate,
            visibility_timeout: Duration::from_secs(10),
            panic_rate: 0.0,
            adaptive: true,
            latency: Duration::ZERO,
        }
    }

    /// A downstream that takes 50 ms per request and always succeeds.
    struct Slow;

    impl ItemWriter for Slow {
        async fn write(&self, _: ImportId, _: &[Row]) -> Result<(), WriteError> {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(())
        }
    }

    fn row(sku: &str) -> Row {
        Row {
            sku: sku.into(),
            name: "n".into(),
            quantity: 1,
            price_cents: 1,
        }
    }

    #[tokio::test]
    async fn the_downstream_admits_at_most_c_concurrent_requests_and_throttles_the_rest() {
        let chaos = Arc::new(Chaos::new(knobs(3, 1000.0)));
        let writer = CapacityWriter {
            inner: Slow,
            chaos: Arc::clone(&chaos),
        };
        let id = ImportId::generate();
        let rows: Vec<Vec<Row>> = (0..10).map(|i| vec![row(&format!("s{i}"))]).collect();
        let results =
            futures_util::future::join_all(rows.iter().map(|r| writer.write(id, r))).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 3);
        assert!(
            results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .all(|e| matches!(e, WriteError::Throttled(_)))
        );
        let goodput = chaos.downstream.goodput();
        assert_eq!(goodput.peak, 3);
        assert_eq!(goodput.throttled_concurrency, 7);
        assert_eq!(
            chaos.downstream.rows.lock().unwrap()[&id.to_string()].len(),
            3
        );
    }

    #[tokio::test]
    async fn the_downstream_throttles_beyond_its_request_rate() {
        // R = 10/s: a burst of one token, then one more every 100 ms.
        let chaos = Arc::new(Chaos::new(knobs(100, 10.0)));
        let writer = CapacityWriter {
            inner: Slow,
            chaos: Arc::clone(&chaos),
        };
        let id = ImportId::generate();
        let rows = [row("a")];
        let (first, second) = (writer.write(id, &rows).await, writer.write(id, &rows).await);
        assert!(first.is_ok() && second.is_err());
        assert_eq!(chaos.downstream.goodput().throttled_rate, 1);
    }

    #[test]
    fn the_per_second_figures_sum_the_environments_and_count_only_the_places_they_could_use() {
        let chaos = Chaos::new(knobs(4, 100.0));
        let down = &chaos.downstream;
        // One environment with 3 calls pending under a limit of 1, another with 1 pending under
        // a limit of 5, each for half a second.
        down.demand(3, 1, 1, Duration::from_millis(500));
        down.demand(1, 1, 5, Duration::from_millis(500));
        down.tally(true);
        down.tally(false);
        // Summed over the rows, whichever second each sample fell in.
        let totals: Vec<f64> = (1..7)
            .map(|column| {
                down.per_second()
                    .iter()
                    .map(|row| row[column].as_f64().unwrap())
                    .sum()
            })
            .collect();
        // Successful, throttled, pending, in flight, limits, usable.
        assert_eq!(totals, [1.0, 1.0, 2.0, 1.0, 3.0, 1.0]);
    }

    async fn read_all(body: CutBody) -> (Vec<u8>, io::Result<usize>) {
        let mut body = body;
        let mut bytes = Vec::new();
        let result = body.read_to_end(&mut bytes).await;
        (bytes, result)
    }

    #[tokio::test]
    async fn a_cut_stream_fails_after_its_bytes_and_a_cut_past_the_end_never_fires() {
        let chaos = Arc::new(Chaos::new(knobs(1, 1.0)));
        let body = |remaining| CutBody {
            inner: Box::new(tokio::io::BufReader::new(&[7u8; 1000][..])),
            remaining,
            chaos: Arc::clone(&chaos),
        };
        let (bytes, result) = read_all(body(100)).await;
        assert_eq!(bytes.len(), 100);
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
        let (bytes, result) = read_all(body(5000)).await;
        assert_eq!((bytes.len(), result.unwrap()), (1000, 1000));
        let (bytes, result) = read_all(body(1000)).await;
        assert_eq!((bytes.len(), result.unwrap()), (1000, 1000));
    }

    #[test]
    fn the_table_says_rows_ok_only_when_every_sku_was_compared_and_none_was_wrong() {
        let report = |checked: u64, wrong: u64| {
            json!({
                "maximum_concurrency": 5, "concurrency_limit": "adaptive",
                "mean_concurrency_limit": 4.26, "accepted": 90, "completed": 88,
                "failed_poison": 2, "lost": 0, "failed_not_poison": 1,
                "unfinished_at_timeout": 0, "completed_twice": 0,
                // Files repeat SKUs: far more rows than SKUs.
                "rows_expected": 600, "items_expected": 150, "skus_checked": checked,
                "value_mismatches": wrong, "stray_rows": 0,
                "downstream": {"peak_concurrency": 4, "capacity": 4, "goodput_fraction": 0.874,
                               "throttled_concurrency": 3, "throttled_rate": 4},
                "drain_seconds": 44.6, "retries": 26, "parked_by_class": {"a": 1, "b": 1},
                "circuit_openings": 0, "kills": {"random": 1, "point": 2},
                "duplicate_deliveries": 4, "records_panicked": 0, "faults": {"s3": 7},
                "check_passed": wrong == 0,
            })
        };
        let cell = |report: &Value, name: &str| {
            table_columns(report)
                .into_iter()
                .find(|(column, _)| column == name)
                .map(|(_, value)| value)
                .unwrap()
        };

        let good = report(150, 0);
        assert_eq!(cell(&good, "rows ok"), json!(true));
        assert_eq!(cell(&good, "limit"), json!("adaptive 4.3"));
        assert_eq!(cell(&good, "done+poison"), json!("88+2"));
        assert_eq!(
            cell(&good, "lost"),
            json!(1),
            "a healthy import failed counts as lost"
        );
        assert_eq!(cell(&good, "goodput"), json!("87%"));
        assert_eq!(cell(&good, "throttled"), json!(7));
        assert_eq!(cell(&good, "kills"), json!(3));
        assert_eq!(cell(&report(150, 1), "rows ok"), json!(false));
        assert_eq!(cell(&report(149, 0), "rows ok"), json!(false));
    }
}
