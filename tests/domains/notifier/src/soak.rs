//! A burst of notifications through the hosted notifier, drained, then checked: what `demo`
//! and `chaos` run, with different knobs.
//!
//! The burst requests N notifications through `notifier::request`, the sender's real code, each
//! with a payload only it has; a third are requested again and a ninth a third time (client
//! retries), after the originals, so some retries find their notification already delivered.
//! Once the queue is empty the mapping stops and [`check`] decides: every notification is
//! `DELIVERED` with exactly one effect at the partner, under its own key, carrying its own
//! payload; no effect under any other key; nothing parked, nothing lost. What a partner without
//! key deduplication would have done twice is counted too (repeated calls).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{StreamExt as _, stream};
use notifier::store::{NotificationStatus, NotificationStore as _};
use notifier::{NotificationId, Requested, request};
use serde_json::{Value, json};
use tracing::Instrument as _;

use crate::hosted::{Hosted, Invocations};
use crate::partner::{KeyLedger, PartnerStats};

/// Notifications requested at once by the burst's senders.
const SENDERS: usize = 8;

/// How often the drain is watched (and the progress line printed).
const POLL: Duration = Duration::from_millis(500);

/// The payload only notification `n` (`id`) has: a mix-up shows as a wrong payload.
pub fn payload(n: usize, id: NotificationId) -> String {
    format!(
        r#"{{"notification":"{id}","summary":"import {n} finished: {} rows"}}"#,
        n * 37 + 1
    )
}

/// How often notification `n` is requested: once, a third twice, a ninth three times.
fn copies(n: usize) -> usize {
    1 + usize::from(n % 3 == 0) + usize::from(n % 9 == 0)
}

/// What the sender side did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Calls of `request`, client retries included.
    pub calls: usize,
    /// Answered `Queued`.
    pub queued: usize,
    /// Answered `AlreadyDelivered`: a retry after the delivery, nothing sent.
    pub already_delivered: usize,
    /// Failed.
    pub errors: usize,
}

/// Requests `requests` notifications (and the client retries) on `hosted`'s table and queue.
pub async fn send(hosted: &Hosted, requests: usize) -> (Vec<(NotificationId, String)>, Sent) {
    let notifications: Vec<(NotificationId, String)> = (0..requests)
        .map(|n| {
            let id = NotificationId::generate();
            (id, payload(n, id))
        })
        .collect();
    let order: Vec<usize> = (1..=3)
        .flat_map(|copy| (0..requests).filter(move |n| copies(*n) >= copy))
        .collect();
    let answers: Vec<_> = stream::iter(order)
        .map(|n| {
            let (id, payload) = &notifications[n];
            // The sender's span: the job carries its context, so a record's span links to it
            // and `make trace ID=<notification id>` starts from the request.
            request(&hosted.store, &hosted.jobs, *id, payload).instrument(tracing::info_span!(
                "request notification",
                notification_id = %id,
                otel.kind = "producer",
            ))
        })
        .buffer_unordered(SENDERS)
        .collect()
        .await;
    let mut sent = Sent {
        calls: answers.len(),
        ..Sent::default()
    };
    for answer in answers {
        match answer {
            Ok(Requested::Queued) => sent.queued += 1,
            Ok(Requested::AlreadyDelivered) => sent.already_delivered += 1,
            Err(e) => {
                sent.errors += 1;
                tracing::error!(error = %queue_worker::telemetry::error_chain(&e), "a request failed");
            }
        }
    }
    (notifications, sent)
}

/// Waits until the queue has been empty for two polls in a row, or `timeout` from `started`;
/// prints a progress line now and then. Returns whether it drained.
pub async fn drain(
    hosted: &mut Hosted,
    requests: usize,
    started: Instant,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let mut empty = 0;
    let mut last_line = Instant::now();
    loop {
        let depth = hosted.queue_depth().await?;
        empty = if depth == 0 { empty + 1 } else { 0 };
        if empty >= 2 {
            return Ok(true);
        }
        if started.elapsed() >= timeout {
            return Ok(false);
        }
        if last_line.elapsed() >= Duration::from_secs(5) {
            last_line = Instant::now();
            let invocations = hosted.invocations();
            eprintln!(
                "  {:>4.0} s: {} of {requests} notifications in effect at the partner, {depth} \
                 messages on the queue, {} partner calls, {} invocations ({} failed), {} kills",
                started.elapsed().as_secs_f64(),
                hosted.partner.effects(),
                hosted.partner.stats().calls,
                invocations.total,
                invocations.failed,
                hosted.kills(),
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Everything observed after the burst, for [`check`].
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The notifications requested, with their payloads.
    pub notifications: Vec<(NotificationId, String)>,
    /// Each one's status at the end (`None`: no record).
    pub statuses: HashMap<NotificationId, Option<NotificationStatus>>,
    /// What the partner saw, by key.
    pub ledger: BTreeMap<String, KeyLedger>,
    /// The partner's counters.
    pub partner: PartnerStats,
    /// The parked messages: notification id (if the body named one) and class.
    pub parked: Vec<(Option<String>, String)>,
    /// The sender side.
    pub sent: Sent,
    /// Whether the queue drained before the timeout.
    pub drained: bool,
}

/// The verdict and its numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Notifications requested.
    pub requested: usize,
    /// `DELIVERED` at the end.
    pub delivered: usize,
    /// Neither delivered nor parked with a reason.
    pub lost: usize,
    /// Parked, by class.
    pub parked: BTreeMap<String, usize>,
    /// Fewest and most effects under a requested notification's key.
    pub effects_per_key: (usize, usize),
    /// Most calls with one key, and the mean over the requested keys.
    pub calls_per_key: (u32, f64),
    /// Accepted calls beyond the first per key: what a partner without key deduplication would
    /// have acted on again.
    pub repeated_calls: u64,
    /// Effects beyond one per key, with another notification's payload, or under a key of no
    /// notification: each one a notification acted on twice or wrongly.
    pub duplicates: usize,
    /// Notifications in effect (once, with their payload) per partner call.
    pub goodput: Option<f64>,
    /// What is wrong; empty when the check passes.
    pub problems: Vec<String>,
}

impl Verdict {
    /// Whether every notification took effect exactly once, nothing was lost or parked.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The check: see the module's documentation.
pub fn check(observed: &Observed) -> Verdict {
    let mut problems = Vec::new();
    let mut problem = |text: String| {
        if problems.len() < 200 {
            problems.push(text);
        }
    };
    let parked_ids: HashMap<&str, &str> = observed
        .parked
        .iter()
        .filter_map(|(id, class)| Some((id.as_deref()?, class.as_str())))
        .collect();
    let mut parked: BTreeMap<String, usize> = BTreeMap::new();
    for (_, class) in &observed.parked {
        *parked.entry(class.clone()).or_default() += 1;
    }
    let (mut delivered, mut lost, mut in_effect, mut duplicates) = (0, 0, 0, 0);
    let mut effects_per_key = (usize::MAX, 0);
    let (mut most_calls, mut calls) = (0, 0u64);
    let mut repeated_calls = 0;
    let mut keys = std::collections::HashSet::new();
    let none = KeyLedger::default();
    for (id, payload) in &observed.notifications {
        let key = id.partner_key();
        let ledger = observed.ledger.get(&key).unwrap_or(&none);
        keys.insert(key);
        let status = observed.statuses.get(id).copied().flatten();
        let effects = ledger.effects.len();
        effects_per_key = (
            effects_per_key.0.min(effects),
            effects_per_key.1.max(effects),
        );
        most_calls = most_calls.max(ledger.calls);
        calls += u64::from(ledger.calls);
        repeated_calls += u64::from(ledger.accepted.saturating_sub(1));
        // Every effect but one with the notification's own payload is one too many.
        duplicates += effects - usize::from(ledger.effects.contains(payload));
        let foreign = ledger.effects.iter().filter(|p| *p != payload).count();
        if foreign > 0 {
            problem(format!("{id}: {foreign} effects with another payload"));
        }
        if effects == 1 && foreign == 0 {
            in_effect += 1;
        }
        if effects > 1 {
            problem(format!("{id}: {effects} effects at the partner"));
        }
        match status {
            Some(NotificationStatus::Delivered) => {
                delivered += 1;
                if effects == 0 {
                    problem(format!(
                        "{id}: marked delivered, but the partner never acted"
                    ));
                }
            }
            _ => match parked_ids.get(id.to_string().as_str()) {
                Some(class) if *class != "max_receive_count" => {
                    problem(format!("{id}: parked as {class}"));
                }
                _ => {
                    lost += 1;
                    problem(format!("{id}: lost ({status:?}, {effects} effects)"));
                }
            },
        }
    }
    for (key, ledger) in &observed.ledger {
        if !keys.contains(key) && !ledger.effects.is_empty() {
            duplicates += ledger.effects.len();
            problem(format!(
                "{} effects under {key}, the key of no notification",
                ledger.effects.len()
            ));
        }
    }
    if observed.partner.without_key > 0 {
        problem(format!(
            "{} calls without an Idempotency-Key",
            observed.partner.without_key
        ));
    }
    if observed.sent.errors > 0 {
        problem(format!("{} requests failed", observed.sent.errors));
    }
    if !observed.drained {
        problem("the queue did not drain before the timeout".to_owned());
    }
    let requested = observed.notifications.len();
    Verdict {
        requested,
        delivered,
        lost,
        parked,
        effects_per_key: if requested == 0 {
            (0, 0)
        } else {
            effects_per_key
        },
        calls_per_key: (
            most_calls,
            if requested == 0 {
                0.0
            } else {
                calls as f64 / requested as f64
            },
        ),
        repeated_calls,
        duplicates,
        goodput: (observed.partner.calls > 0)
            .then(|| in_effect as f64 / observed.partner.calls as f64),
        problems,
    }
}

/// A finished burst: what was observed, the verdict and the run's measurements.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What the check saw.
    pub observed: Observed,
    /// The check.
    pub verdict: Verdict,
    /// From the first request until the queue was empty.
    pub drain: Duration,
    /// Invocations of the notifier.
    pub invocations: Invocations,
    /// Processes killed during invocations.
    pub kills: u64,
    /// Messages delivered to a second, concurrent invocation.
    pub duplicate_deliveries: u64,
    /// Faults injected at the library's seams in the binary, by seam.
    pub seam_faults: BTreeMap<String, u64>,
    /// The mapping's maximum concurrency.
    pub maximum_concurrency: usize,
}

/// Requests `requests` notifications, drains, stops the mapping and checks.
pub async fn run(
    hosted: &mut Hosted,
    requests: usize,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let (notifications, sent) = send(hosted, requests).await;
    let drained = drain(hosted, requests, started, timeout).await?;
    let drain = started.elapsed();
    // In-flight invocations (a duplicate delivery's among them) finish before the partner is
    // read.
    hosted.stop().await;
    let store = &hosted.store;
    let statuses: HashMap<NotificationId, Option<NotificationStatus>> =
        stream::iter(&notifications)
            .map(|(id, _)| async move {
                let found = store
                    .get(*id)
                    .await
                    .with_context(|| format!("reading notification {id}"))?;
                anyhow::Ok((*id, found.map(|n| n.status)))
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<_>>()?;
    let observed = Observed {
        notifications,
        statuses,
        ledger: hosted.partner.ledger(),
        partner: hosted.partner.stats(),
        parked: hosted.take_parked().await?,
        sent,
        drained,
    };
    Ok(Outcome {
        verdict: check(&observed),
        observed,
        drain,
        invocations: hosted.invocations(),
        kills: hosted.kills(),
        duplicate_deliveries: hosted.duplicate_deliveries(),
        seam_faults: hosted.seam_faults(),
        maximum_concurrency: hosted.maximum_concurrency,
    })
}

impl Outcome {
    /// The report, as JSON; `summary` holds the few columns the scripts' table prints, and
    /// `summary_columns` their order.
    pub fn report(&self, concurrency_limit: &str, knobs: Value) -> Value {
        let v = &self.verdict;
        let sent = &self.observed.sent;
        let partner = &self.observed.partner;
        let goodput = v
            .goodput
            .map_or_else(|| "n/a".into(), |g| format!("{:.0}%", g * 100.0));
        let summary: Vec<(String, Value)> = [
            ("conc", json!(self.maximum_concurrency)),
            ("limit", json!(concurrency_limit)),
            ("requested", json!(v.requested)),
            ("delivered", json!(v.delivered)),
            ("lost", json!(v.lost)),
            ("parked", json!(v.parked.values().sum::<usize>())),
            (
                "effects/key",
                json!(format!("{}..{}", v.effects_per_key.0, v.effects_per_key.1)),
            ),
            ("calls/key max", json!(v.calls_per_key.0)),
            ("calls/key mean", json!(format!("{:.2}", v.calls_per_key.1))),
            ("repeated", json!(v.repeated_calls)),
            ("dups", json!(v.duplicates)),
            ("goodput", json!(goodput)),
            ("drain s", json!(format!("{:.0}", self.drain.as_secs_f64()))),
            ("kills", json!(self.kills)),
            ("dup deliveries", json!(self.duplicate_deliveries)),
            ("seam faults", json!(self.seam_faults.values().sum::<u64>())),
            ("pass", json!(v.passed())),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
        json!({
            "domain": "notifier",
            "requested": v.requested,
            "maximum_concurrency": self.maximum_concurrency,
            "concurrency_limit": concurrency_limit,
            "knobs": knobs,
            "requests": {
                "calls": sent.calls,
                "queued": sent.queued,
                "already_delivered": sent.already_delivered,
                "errors": sent.errors,
            },
            "delivered": v.delivered,
            "lost": v.lost,
            "parked": v.parked,
            "effects_per_key": { "min": v.effects_per_key.0, "max": v.effects_per_key.1 },
            "calls_per_key": { "max": v.calls_per_key.0, "mean": v.calls_per_key.1 },
            "repeated_calls": v.repeated_calls,
            "duplicates": v.duplicates,
            "goodput": v.goodput,
            "drained": self.observed.drained,
            "drain_seconds": self.drain.as_secs_f64(),
            "kills": self.kills,
            "duplicate_deliveries": self.duplicate_deliveries,
            "seam_faults": self.seam_faults,
            "invocations": {
                "total": self.invocations.total,
                "failed": self.invocations.failed,
                "timed_out": self.invocations.timed_out,
            },
            "partner": {
                "calls": partner.calls,
                "peak_concurrency": partner.peak_concurrency,
                "throttled_capacity": partner.throttled_capacity,
                "throttled_rate": partner.throttled_rate,
                "throttled_injected": partner.throttled_injected,
                "failed_after_effect": partner.failed_after_effect,
                "hung_after_effect": partner.hung_after_effect,
                "without_key": partner.without_key,
            },
            "problems": v.problems,
            "check_passed": v.passed(),
            "summary": summary.iter().cloned().collect::<serde_json::Map<_, _>>(),
            // JSON objects have no order: the table's columns, in order.
            "summary_columns": summary.iter().map(|(name, _)| name.clone()).collect::<Vec<_>>(),
        })
    }

    /// The outcome as a short table, then the first problems.
    pub fn print(&self) {
        let v = &self.verdict;
        let partner = &self.observed.partner;
        let mut table = comfy_table::Table::new();
        table
            .load_style(comfy_table::presets::UTF8_FULL)
            .set_header(["", "count"]);
        let rows: [(&str, String); 13] = [
            ("notifications requested", v.requested.to_string()),
            (
                "requests sent (client retries included)",
                self.observed.sent.calls.to_string(),
            ),
            ("delivered (record DELIVERED)", v.delivered.to_string()),
            (
                "effects per key at the partner (min..max)",
                format!("{}..{}", v.effects_per_key.0, v.effects_per_key.1),
            ),
            ("duplicate or foreign effects", v.duplicates.to_string()),
            ("lost", v.lost.to_string()),
            ("parked", v.parked.values().sum::<usize>().to_string()),
            ("partner calls", partner.calls.to_string()),
            (
                "calls per key (max, mean)",
                format!("{}, {:.2}", v.calls_per_key.0, v.calls_per_key.1),
            ),
            (
                "repeated calls (a partner without key dedup acts again)",
                v.repeated_calls.to_string(),
            ),
            (
                "faults injected at the library's seams",
                self.seam_faults.values().sum::<u64>().to_string(),
            ),
            (
                "invocations (failed)",
                format!("{} ({})", self.invocations.total, self.invocations.failed),
            ),
            ("drained in", format!("{:.1} s", self.drain.as_secs_f64())),
        ];
        for (name, value) in rows {
            table.add_row([name.to_owned(), value]);
        }
        println!("{table}");
        for problem in v.problems.iter().take(20) {
            println!("  problem: {problem}");
        }
        println!("check: {}", if v.passed() { "passed" } else { "FAILED" });
    }
}

#[cfg(test)]
mod tests;
