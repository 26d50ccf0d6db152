//! One CloudWatch Embedded Metric Format line per invocation of a worker.
//!
//! Lambda sends stdout to CloudWatch Logs, which turns a line in this format into metrics with
//! no API call and no agent: `Processed`, `Duplicates`, `Failed` (reported back to the queue),
//! `Retried` (retryable failures), `Parked` (sent to the DLQ) and `OldestMessageAgeMs`, in the
//! namespace `METRICS_NAMESPACE` (default [`DEFAULT_NAMESPACE`]) with the dimension
//! `FunctionName`, so every worker of a stack reports under one namespace and is told apart by
//! its function. `METRICS.md`, beside this crate, says when each moves and what it answers.

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

/// The EMF document for one invocation of `function_name`, in `namespace`.
pub fn emf(
    namespace: &str,
    function_name: &str,
    summary: &BatchSummary,
    oldest: Option<Duration>,
    now: SystemTime,
) -> Value {
    let timestamp = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let count = |status| summary.count(status) as u64;
    let metric = |name: &str, unit: &str| json!({ "Name": name, "Unit": unit });
    json!({
        "_aws": {
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["FunctionName"]],
                "Metrics": [
                    metric("Processed", "Count"),
                    metric("Duplicates", "Count"),
                    metric("Failed", "Count"),
                    metric("Retried", "Count"),
                    metric("Parked", "Count"),
                    metric("OldestMessageAgeMs", "Milliseconds"),
                ],
            }],
        },
        "FunctionName": function_name,
        "Processed": count(RecordStatus::Processed),
        "Duplicates": count(RecordStatus::Duplicate),
        "Failed": summary.failed() as u64,
        "Retried": count(RecordStatus::Retried) + count(RecordStatus::Panicked),
        "Parked": count(RecordStatus::Parked),
        "OldestMessageAgeMs": oldest.map_or(0, |age| age.as_millis() as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The (name, unit) rows of `METRICS.md`'s table.
    fn documented() -> Vec<(String, String)> {
        include_str!("../METRICS.md")
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                Some((name.to_owned(), (*cells.get(2)?).to_owned()))
            })
            .collect()
    }

    #[test]
    fn the_table_is_the_line() {
        let line = emf(
            DEFAULT_NAMESPACE,
            "worker",
            &BatchSummary::default(),
            None,
            UNIX_EPOCH,
        );
        let emitted: Vec<(String, String)> = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["Name"].as_str().unwrap().to_owned(),
                    m["Unit"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(documented(), emitted);
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
        let line = emf("Workers", "thumbnailer", &summary, oldest, now);
        assert_eq!(line["Processed"], 2);
        assert_eq!(line["Duplicates"], 1);
        assert_eq!(line["Failed"], 3);
        assert_eq!(line["Retried"], 2);
        assert_eq!(line["Parked"], 1);
        assert_eq!(line["OldestMessageAgeMs"], 120_000);
        assert_eq!(line["_aws"]["Timestamp"], 1_795_858_260_000u64);
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Workers");
        assert_eq!(line["FunctionName"], "thumbnailer");
        let names: Vec<&str> = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        for name in &names {
            assert!(line.get(*name).is_some(), "metric {name} has a value");
        }
    }
}
