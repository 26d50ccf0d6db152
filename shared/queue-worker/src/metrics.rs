//! The CloudWatch Embedded Metric Format lines of one invocation of a worker.
//!
//! Lambda sends stdout to CloudWatch Logs, which turns a line in this format into metrics with
//! no API call and no agent. Every invocation prints one line with the batch's counts and the
//! events of its jobs (dimension `FunctionName`); then one line per class of the records it
//! parked (`FunctionName`, `ErrorClass`) and one per protected dependency it called
//! (`FunctionName`, `Dependency`). The namespace is `METRICS_NAMESPACE` (default
//! [`DEFAULT_NAMESPACE`]), so every worker of a stack reports under one namespace and is told
//! apart by its function. `METRICS.md`, beside this crate, is the contract: each metric, when it
//! moves and what it answers; a unit test fails when it and these lines differ.
//!
//! The events are noted where they happen ([`note`]), into the invocation's [`Events`], which
//! [`counting`] makes current for the future that processes the batch: the records of a batch
//! run concurrently on that one task, so whatever a record's handler or a dependency it calls
//! notes is counted, and nothing else (another execution environment in the same process, as
//! the local runner has, counts its own).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::batch::{BatchSummary, RecordStatus};
use aws_lambda_events::event::sqs::SqsEvent;
use serde_json::{Value, json};

/// The metric namespace when `METRICS_NAMESPACE` is not set.
pub const DEFAULT_NAMESPACE: &str = "QueueWorkers";

/// The age of the batch's oldest message, from its `SentTimestamp`.
pub fn oldest_message_age(event: &SqsEvent, now: SystemTime) -> Option<Duration> {
    event
        .records
        .iter()
        .filter_map(|r| r.attributes.get("SentTimestamp")?.parse::<u64>().ok())
        .min()
        .map(|sent| {
            now.duration_since(UNIX_EPOCH + Duration::from_millis(sent))
                .unwrap_or_default()
        })
}

/// What the jobs of one invocation did beyond each record's status (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Events {
    /// Jobs retried because another delivery held their claim.
    pub in_progress: u64,
    /// Continuations sent ([`crate::worker::Done::then`]).
    pub continuations: u64,
    /// Continuations held back ([`crate::worker::Done::then_after`] with a delay): the job
    /// made no progress this time and waits before trying again.
    pub stalls: u64,
    /// Records parked in the dead-letter queue, by the class of their failure.
    pub parked: BTreeMap<&'static str, u64>,
    /// What each protected dependency went through, by its name.
    pub dependencies: BTreeMap<&'static str, DependencyEvents>,
}

/// What one protected dependency went through in one invocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DependencyEvents {
    /// Attempts the dependency refused as throttled.
    pub throttled: u64,
    /// Times the circuit opened.
    pub circuit_openings: u64,
    /// The lowest concurrency limit a call started under.
    pub lowest_limit: Option<usize>,
}

tokio::task_local! {
    static CURRENT: Arc<Mutex<Events>>;
}

/// Runs `work` with a fresh [`Events`] current, and returns its output with what was noted.
pub async fn counting<F: Future>(work: F) -> (F::Output, Events) {
    let events = Arc::new(Mutex::new(Events::default()));
    let output = CURRENT.scope(Arc::clone(&events), work).await;
    let events = events
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    (output, events)
}

/// Notes an event into the current invocation's [`Events`]; outside [`counting`], nothing.
pub fn note(event: impl FnOnce(&mut Events)) {
    let _ = CURRENT
        .try_with(|events| event(&mut events.lock().unwrap_or_else(PoisonError::into_inner)));
}

/// Notes an event of dependency `name` (see [`note`]).
pub fn note_dependency(name: &'static str, event: impl FnOnce(&mut DependencyEvents)) {
    note(|events| event(events.dependencies.entry(name).or_default()));
}

/// The EMF lines of one invocation of `function_name`, in `namespace`: the batch's line, then
/// one per class parked, then one per dependency called.
pub fn lines(
    namespace: &str,
    function_name: &str,
    summary: &BatchSummary,
    events: &Events,
    oldest: Option<Duration>,
    now: SystemTime,
) -> Vec<Value> {
    let timestamp = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let document = |dimension: Option<(&str, &str)>, values: &[(&str, &str, u64)]| {
        let mut dimensions = vec!["FunctionName"];
        let mut line = json!({ "FunctionName": function_name });
        if let Some((name, value)) = dimension {
            dimensions.push(name);
            line[name] = value.into();
        }
        let metrics: Vec<Value> = values
            .iter()
            .map(|(name, unit, _)| json!({ "Name": name, "Unit": unit }))
            .collect();
        line["_aws"] = json!({
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [dimensions],
                "Metrics": metrics,
            }],
        });
        for (name, _, value) in values {
            line[*name] = (*value).into();
        }
        line
    };
    let count = |status| summary.count(status) as u64;
    let mut lines = vec![document(
        None,
        &[
            ("Processed", "Count", count(RecordStatus::Processed)),
            ("Duplicates", "Count", count(RecordStatus::Duplicate)),
            ("Failed", "Count", summary.failed() as u64),
            (
                "Retried",
                "Count",
                count(RecordStatus::Retried) + count(RecordStatus::Panicked),
            ),
            ("InProgressRetries", "Count", events.in_progress),
            ("Parked", "Count", count(RecordStatus::Parked)),
            ("Continuations", "Count", events.continuations),
            ("Stalls", "Count", events.stalls),
            (
                "OldestMessageAgeMs",
                "Milliseconds",
                oldest.map_or(0, |age| age.as_millis() as u64),
            ),
        ],
    )];
    for (class, parked) in &events.parked {
        lines.push(document(
            Some(("ErrorClass", class)),
            &[("Parked", "Count", *parked)],
        ));
    }
    for (name, dependency) in &events.dependencies {
        let mut values = vec![
            ("Throttled", "Count", dependency.throttled),
            ("CircuitOpenings", "Count", dependency.circuit_openings),
        ];
        if let Some(limit) = dependency.lowest_limit {
            values.push(("ConcurrencyLimit", "Count", limit as u64));
        }
        lines.push(document(Some(("Dependency", name)), &values));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row of the contract: a metric's name, unit and dimensions.
    type Row = (String, String, String);

    /// The rows of `METRICS.md`'s table.
    fn documented() -> Vec<Row> {
        include_str!("../METRICS.md")
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                let dimensions = cells.get(3)?.replace('`', "");
                Some((name.to_owned(), (*cells.get(2)?).to_owned(), dimensions))
            })
            .collect()
    }

    /// The rows `lines` declares, each once, in the order of the lines.
    fn declared(lines: &[Value]) -> Vec<Row> {
        let mut rows: Vec<Row> = Vec::new();
        for line in lines {
            let directive = &line["_aws"]["CloudWatchMetrics"][0];
            let dimensions: Vec<&str> = directive["Dimensions"][0]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_str().unwrap())
                .collect();
            for metric in directive["Metrics"].as_array().unwrap() {
                let name = metric["Name"].as_str().unwrap();
                assert!(line.get(name).is_some(), "metric {name} has a value");
                let row = (
                    name.to_owned(),
                    metric["Unit"].as_str().unwrap().to_owned(),
                    dimensions.join(", "),
                );
                if !rows.contains(&row) {
                    rows.push(row);
                }
            }
            for dimension in dimensions {
                assert!(
                    line[dimension].is_string(),
                    "dimension {dimension} has a value"
                );
            }
        }
        rows
    }

    /// Events of every kind: the invocation prints every line it can.
    fn every_event() -> Events {
        Events {
            in_progress: 1,
            continuations: 2,
            stalls: 1,
            parked: BTreeMap::from([("malformed_job", 2), ("payload_mismatch", 1)]),
            dependencies: BTreeMap::from([(
                "partner",
                DependencyEvents {
                    throttled: 7,
                    circuit_openings: 1,
                    lowest_limit: Some(3),
                },
            )]),
        }
    }

    #[test]
    fn the_table_is_the_lines() {
        let lines = lines(
            DEFAULT_NAMESPACE,
            "worker",
            &BatchSummary::default(),
            &every_event(),
            None,
            UNIX_EPOCH,
        );
        assert_eq!(documented(), declared(&lines));
    }

    #[test]
    fn without_events_only_the_batch_line_is_printed() {
        let lines = lines(
            DEFAULT_NAMESPACE,
            "worker",
            &BatchSummary::default(),
            &Events::default(),
            None,
            UNIX_EPOCH,
        );
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["InProgressRetries"], 0);
        assert_eq!(lines[0]["Stalls"], 0);
    }

    #[test]
    fn one_line_carries_every_count_and_the_oldest_age() {
        let mut event = SqsEvent::default();
        for sent in ["1795858200000", "1795858140000"] {
            let mut record = aws_lambda_events::event::sqs::SqsMessage::default();
            record
                .attributes
                .insert("SentTimestamp".into(), sent.into());
            event.records.push(record);
        }
        let now = UNIX_EPOCH + Duration::from_millis(1_795_858_260_000);
        let oldest = oldest_message_age(&event, now);
        assert_eq!(oldest, Some(Duration::from_secs(120)));

        let summary: BatchSummary = [
            RecordStatus::Processed,
            RecordStatus::Processed,
            RecordStatus::Duplicate,
            RecordStatus::Retried,
            RecordStatus::Panicked,
            RecordStatus::Parked,
            RecordStatus::NotStarted,
        ]
        .into_iter()
        .collect();
        let lines = lines(
            "Workers",
            "thumbnailer",
            &summary,
            &every_event(),
            oldest,
            now,
        );
        let line = &lines[0];
        assert_eq!(line["Processed"], 2);
        assert_eq!(line["Duplicates"], 1);
        assert_eq!(line["Failed"], 3);
        assert_eq!(line["Retried"], 2);
        assert_eq!(line["InProgressRetries"], 1);
        assert_eq!(line["Parked"], 1);
        assert_eq!(line["Continuations"], 2);
        assert_eq!(line["Stalls"], 1);
        assert_eq!(line["OldestMessageAgeMs"], 120_000);
        assert_eq!(line["FunctionName"], "thumbnailer");
        for line in &lines {
            assert_eq!(line["_aws"]["Timestamp"], 1_795_858_260_000u64);
            assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Workers");
            assert_eq!(line["FunctionName"], "thumbnailer");
        }
        let by = |dimension: &str, value: &str| {
            lines
                .iter()
                .find(|line| line[dimension] == value)
                .unwrap_or_else(|| panic!("a line for {dimension} {value}"))
                .clone()
        };
        assert_eq!(by("ErrorClass", "malformed_job")["Parked"], 2);
        assert_eq!(by("ErrorClass", "payload_mismatch")["Parked"], 1);
        let partner = by("Dependency", "partner");
        assert_eq!(partner["Throttled"], 7);
        assert_eq!(partner["CircuitOpenings"], 1);
        assert_eq!(partner["ConcurrencyLimit"], 3);
        assert_eq!(lines.len(), 4);
    }

    #[tokio::test]
    async fn events_noted_inside_counting_are_its_own_and_outside_are_lost() {
        note(|events| events.continuations += 1);
        let noted = async {
            note(|events| events.stalls += 1);
            note_dependency("partner", |d| d.throttled += 1);
            let (_, inner) = counting(async { note(|events| events.in_progress += 1) }).await;
            assert_eq!(inner.in_progress, 1);
            note_dependency("partner", |d| d.throttled += 1);
        };
        let ((), events) = counting(noted).await;
        assert_eq!(events.continuations, 0);
        assert_eq!(events.stalls, 1);
        assert_eq!(events.in_progress, 0, "the inner scope counted its own");
        assert_eq!(events.dependencies["partner"].throttled, 2);
    }
}
