//! Queue health: depth, in flight, delayed, and the age of the oldest message.

use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Statistic};
use aws_sdk_sqs::types::QueueAttributeName as Name;
use serde::Serialize;

use crate::OpsError;

/// One queue's numbers (SQS's approximate counts).
#[derive(Debug, Clone, Serialize)]
pub struct QueueStats {
    /// The queue's name.
    pub name: String,
    /// Messages waiting to be received.
    pub depth: u64,
    /// Messages received and not yet deleted or returned.
    pub in_flight: u64,
    /// Messages not yet visible (delay seconds).
    pub delayed: u64,
    /// Age of the oldest message, from CloudWatch's `ApproximateAgeOfOldestMessage` (the
    /// latest one-minute maximum in the last 15 minutes); `None` where the backend has no
    /// metrics, as on the local emulators.
    pub oldest_age_seconds: Option<u64>,
}

/// Reads the numbers of the queue at `url`; the oldest message's age only when a CloudWatch
/// client is given.
pub async fn queue_stats(
    sqs: &aws_sdk_sqs::Client,
    cloudwatch: Option<&aws_sdk_cloudwatch::Client>,
    url: &str,
) -> Result<QueueStats, OpsError> {
    let attributes = crate::locate::queue_attributes(
        sqs,
        url,
        &[
            Name::ApproximateNumberOfMessages,
            Name::ApproximateNumberOfMessagesNotVisible,
            Name::ApproximateNumberOfMessagesDelayed,
        ],
    )
    .await?;
    let count = |name: &Name| {
        attributes
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let name = url.rsplit('/').next().unwrap_or(url).to_owned();
    Ok(QueueStats {
        oldest_age_seconds: match cloudwatch {
            Some(cloudwatch) => oldest_age(cloudwatch, &name).await,
            None => None,
        },
        depth: count(&Name::ApproximateNumberOfMessages),
        in_flight: count(&Name::ApproximateNumberOfMessagesNotVisible),
        delayed: count(&Name::ApproximateNumberOfMessagesDelayed),
        name,
    })
}

/// The latest `ApproximateAgeOfOldestMessage` maximum, or `None` when there is no datapoint or
/// no metrics service (an emulator without CloudWatch, or no `cloudwatch:GetMetricStatistics`).
async fn oldest_age(cloudwatch: &aws_sdk_cloudwatch::Client, queue_name: &str) -> Option<u64> {
    let now = SystemTime::now();
    let statistics = cloudwatch
        .get_metric_statistics()
        .namespace("AWS/SQS")
        .metric_name("ApproximateAgeOfOldestMessage")
        .dimensions(
            Dimension::builder()
                .name("QueueName")
                .value(queue_name)
                .build(),
        )
        .start_time(DateTime::from(now - Duration::from_secs(15 * 60)))
        .end_time(DateTime::from(now))
        .period(60)
        .statistics(Statistic::Maximum)
        .send()
        .await
        .ok()?;
    statistics
        .datapoints()
        .iter()
        .filter_map(|d| Some((d.timestamp()?.secs(), d.maximum()?)))
        .max_by_key(|(at, _)| *at)
        .map(|(_, age)| age as u64)
}
