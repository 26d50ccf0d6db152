//! A flaky downstream for the demo: an [`ItemWriter`] that fails a share of writes the way a
//! throttled or struggling table does, before they reach the real table. It shows the
//! processor's protection at work: retries inside the dependency, the circuit breaker, records
//! retried with backoff, and still every import completed exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use import_processor::{ItemWriter, Row, WriteError};
use imports::ImportId;

/// Wraps a writer and fails each write with probability `failure_rate` (0 passes every write
/// through).
pub struct FlakyWriter<W> {
    inner: W,
    failure_rate: f64,
    injected: Arc<AtomicU64>,
}

impl<W> FlakyWriter<W> {
    /// Fails `failure_rate` (0.0 to 1.0) of the writes to `inner`, counting them in `injected`.
    pub fn new(inner: W, failure_rate: f64, injected: Arc<AtomicU64>) -> Self {
        Self {
            inner,
            failure_rate,
            injected,
        }
    }
}

impl<W: ItemWriter> ItemWriter for FlakyWriter<W> {
    async fn write(&self, import_id: ImportId, rows: &[Row]) -> Result<(), WriteError> {
        if self.failure_rate > 0.0 && fastrand::f64() < self.failure_rate {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(WriteError::Unavailable(
                "injected fault: the items table is throttling (demo's flaky-downstream mode)"
                    .into(),
            ));
        }
        self.inner.write(import_id, rows).await
    }
}
