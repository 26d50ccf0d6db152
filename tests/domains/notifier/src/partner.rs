//! A fake partner on 127.0.0.1: an API that is not idempotent by itself and acts once per
//! `Idempotency-Key`, as payment and webhook APIs do, and counts everything it is asked.
//!
//! Per key it counts the calls, the calls it *accepted* (past its throttling: those a partner
//! without key deduplication would have acted on) and its effects, with the payload of each.
//! [`PartnerBehaviour`] makes it nasty: a share of calls answered 503 or 429 without acting; a
//! share that act and then answer 500, or answer only after the client gave up (the effect is
//! done, the worker sees a failure); a capacity of C concurrent calls and R calls per second,
//! 429 beyond. With [`PartnerBehaviour::honours_key`] off it acts on every accepted call: a
//! partner that ignores the key, which the check must catch.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use notifier::partner::IDEMPOTENCY_KEY;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The path the partner serves.
pub const PATH: &str = "/notifications";

/// How the fake partner behaves. The default is a well-behaved partner of unlimited capacity.
#[derive(Debug, Clone)]
pub struct PartnerBehaviour {
    /// Whether a repeated key is answered without acting (`200`). Off, every accepted call acts.
    pub honours_key: bool,
    /// Time to answer an accepted call.
    pub latency: Duration,
    /// Share of calls answered 503 or 429 (half each) without acting.
    pub throttle_rate: f64,
    /// Share of accepted calls that act, then answer 500.
    pub fail_after_effect_rate: f64,
    /// Share of accepted calls that act, then answer only after [`hang`](Self::hang).
    pub hang_after_effect_rate: f64,
    /// How long a hanging call takes: set it past the client's timeout.
    pub hang: Duration,
    /// Most concurrent calls (C); one more is answered 429.
    pub capacity: Option<usize>,
    /// Most calls per second (R); one more in the same second is answered 429.
    pub rate: Option<f64>,
}

impl Default for PartnerBehaviour {
    fn default() -> Self {
        Self {
            honours_key: true,
            latency: Duration::from_millis(5),
            throttle_rate: 0.0,
            fail_after_effect_rate: 0.0,
            hang_after_effect_rate: 0.0,
            hang: Duration::from_secs(2),
            capacity: None,
            rate: None,
        }
    }
}

/// What the partner saw of one key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLedger {
    /// Every call with the key.
    pub calls: u32,
    /// Calls past the throttling: a partner without key deduplication acts on each.
    pub accepted: u32,
    /// The payload of each effect, in order: one, for a partner that honours the key.
    pub effects: Vec<String>,
}

/// Counters of the whole run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartnerStats {
    /// Every call.
    pub calls: u64,
    /// Calls without an `Idempotency-Key` (answered 400).
    pub without_key: u64,
    /// Calls answered 429 because C calls were in flight.
    pub throttled_capacity: u64,
    /// Calls answered 429 because R calls came in that second.
    pub throttled_rate: u64,
    /// Calls answered 503 or 429 by [`PartnerBehaviour::throttle_rate`].
    pub throttled_injected: u64,
    /// Calls that acted (or were deduplicated) and then answered 500.
    pub failed_after_effect: u64,
    /// Calls that acted (or were deduplicated) and then hung.
    pub hung_after_effect: u64,
    /// Most calls in flight at once, within the capacity (one refused for it is not counted).
    pub peak_concurrency: u64,
}

#[derive(Default)]
struct Window {
    started: Option<Instant>,
    calls: u64,
}

struct Shared {
    behaviour: PartnerBehaviour,
    ledger: Mutex<BTreeMap<String, KeyLedger>>,
    window: Mutex<Window>,
    in_flight: AtomicU64,
    stats: Mutex<PartnerStats>,
}

impl Shared {
    fn count(&self, update: impl FnOnce(&mut PartnerStats)) {
        if let Ok(mut stats) = self.stats.lock() {
            update(&mut stats);
        }
    }

    /// Whether one more call fits in this second's R.
    fn within_rate(&self) -> bool {
        let Some(rate) = self.behaviour.rate else {
            return true;
        };
        let Ok(mut window) = self.window.lock() else {
            return true;
        };
        let now = Instant::now();
        if window
            .started
            .is_none_or(|started| now.duration_since(started) >= Duration::from_secs(1))
        {
            *window = Window {
                started: Some(now),
                calls: 0,
            };
        }
        window.calls += 1;
        window.calls as f64 <= rate
    }
}

/// Leaves the in-flight count when the call ends, however it ends (a client that gave up drops
/// the handler's future).
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The running fake partner; stops when dropped.
pub struct FakePartner {
    address: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FakePartner {
    /// Serves on a free port of 127.0.0.1.
    pub async fn start(behaviour: PartnerBehaviour) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            behaviour,
            ledger: Mutex::default(),
            window: Mutex::default(),
            in_flight: AtomicU64::new(0),
            stats: Mutex::default(),
        });
        let app = Router::new()
            .route(PATH, post(call))
            .with_state(Arc::clone(&shared));
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the fake partner stopped");
            }
        });
        Ok(Self {
            address,
            shared,
            task,
        })
    }

    /// The URL to POST notifications to: the notifier's `PARTNER_URL`.
    pub fn url(&self) -> String {
        format!("http://{}{PATH}", self.address)
    }

    /// What it saw, per key.
    pub fn ledger(&self) -> BTreeMap<String, KeyLedger> {
        self.shared
            .ledger
            .lock()
            .map(|ledger| ledger.clone())
            .unwrap_or_default()
    }

    /// Its counters.
    pub fn stats(&self) -> PartnerStats {
        self.shared
            .stats
            .lock()
            .map(|stats| *stats)
            .unwrap_or_default()
    }

    /// Keys with at least one effect.
    pub fn effects(&self) -> usize {
        self.shared
            .ledger
            .lock()
            .map(|ledger| ledger.values().filter(|k| !k.effects.is_empty()).count())
            .unwrap_or_default()
    }
}

impl Drop for FakePartner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn call(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    payload: String,
) -> StatusCode {
    let behaviour = &shared.behaviour;
    let in_flight = shared.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    let _leave = InFlight(&shared.in_flight);
    shared.count(|s| s.calls += 1);
    let Some(key) = headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        shared.count(|s| s.without_key += 1);
        return StatusCode::BAD_REQUEST;
    };
    if let Ok(mut ledger) = shared.ledger.lock() {
        ledger.entry(key.clone()).or_default().calls += 1;
    }

    if behaviour
        .capacity
        .is_some_and(|capacity| in_flight > capacity as u64)
    {
        shared.count(|s| s.throttled_capacity += 1);
        return StatusCode::TOO_MANY_REQUESTS;
    }
    shared.count(|s| s.peak_concurrency = s.peak_concurrency.max(in_flight));
    if !shared.within_rate() {
        shared.count(|s| s.throttled_rate += 1);
        return StatusCode::TOO_MANY_REQUESTS;
    }
    if fastrand::f64() < behaviour.throttle_rate {
        shared.count(|s| s.throttled_injected += 1);
        return if fastrand::bool() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
    }

    tokio::time::sleep(behaviour.latency).await;
    let mut acted = false;
    if let Ok(mut ledger) = shared.ledger.lock() {
        let entry = ledger.entry(key).or_default();
        entry.accepted += 1;
        if entry.effects.is_empty() || !behaviour.honours_key {
            entry.effects.push(payload);
            acted = true;
        }
    }
    let answer = if acted {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };

    let draw = fastrand::f64();
    if draw < behaviour.fail_after_effect_rate {
        shared.count(|s| s.failed_after_effect += 1);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    if draw < behaviour.fail_after_effect_rate + behaviour.hang_after_effect_rate {
        shared.count(|s| s.hung_after_effect += 1);
        tokio::time::sleep(behaviour.hang).await;
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(partner: &FakePartner, key: Option<&str>, payload: &str) -> u16 {
        let mut request = reqwest::Client::new()
            .post(partner.url())
            .body(payload.to_owned());
        if let Some(key) = key {
            request = request.header(IDEMPOTENCY_KEY, key);
        }
        request.send().await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn a_partner_that_honours_the_key_acts_once_per_key() {
        let partner = FakePartner::start(PartnerBehaviour::default())
            .await
            .unwrap();

        assert_eq!(post(&partner, Some("k1"), "a").await, 201);
        assert_eq!(post(&partner, Some("k1"), "a").await, 200);
        assert_eq!(post(&partner, Some("k2"), "b").await, 201);
        assert_eq!(post(&partner, None, "c").await, 400);

        let ledger = partner.ledger();
        assert_eq!(ledger["k1"].calls, 2);
        assert_eq!(ledger["k1"].effects, ["a"]);
        assert_eq!(ledger["k2"].effects, ["b"]);
        assert_eq!(partner.stats().without_key, 1);
        assert_eq!(partner.effects(), 2);
    }

    #[tokio::test]
    async fn a_partner_that_ignores_the_key_acts_on_every_call() {
        let partner = FakePartner::start(PartnerBehaviour {
            honours_key: false,
            ..PartnerBehaviour::default()
        })
        .await
        .unwrap();

        assert_eq!(post(&partner, Some("k1"), "a").await, 201);
        assert_eq!(post(&partner, Some("k1"), "a").await, 201);

        assert_eq!(partner.ledger()["k1"].effects, ["a", "a"]);
    }

    #[tokio::test]
    async fn beyond_its_rate_it_answers_429_without_acting() {
        let partner = FakePartner::start(PartnerBehaviour {
            rate: Some(2.0),
            ..PartnerBehaviour::default()
        })
        .await
        .unwrap();

        let statuses = [
            post(&partner, Some("k1"), "a").await,
            post(&partner, Some("k2"), "b").await,
            post(&partner, Some("k3"), "c").await,
        ];

        assert_eq!(statuses, [201, 201, 429]);
        let ledger = partner.ledger();
        assert_eq!((ledger["k3"].calls, ledger["k3"].accepted), (1, 0));
        assert!(ledger["k3"].effects.is_empty());
        assert_eq!(partner.stats().throttled_rate, 1);
    }

    #[tokio::test]
    async fn a_call_that_fails_after_its_effect_has_acted() {
        let partner = FakePartner::start(PartnerBehaviour {
            fail_after_effect_rate: 1.0,
            ..PartnerBehaviour::default()
        })
        .await
        .unwrap();

        assert_eq!(post(&partner, Some("k1"), "a").await, 500);

        assert_eq!(partner.ledger()["k1"].effects, ["a"]);
        assert_eq!(partner.stats().failed_after_effect, 1);
    }
}
