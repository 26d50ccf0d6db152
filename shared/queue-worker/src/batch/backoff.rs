//! Exponential, jittered, capped redelivery delay for retryable failures.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// The visibility timeout SQS accepts at most (12 hours).
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

/// The longest a delivery can have been in flight when the batch processor changes its
/// visibility: Lambda's longest batching window (5 min) before the invocation, plus its longest
/// timeout (15 min).
const LONGEST_DELIVERY: Duration = Duration::from_secs(20 * 60);

/// Kept off the limit for clock skew between SQS and the function (the receive timestamp is
/// approximate) and the time the request takes to arrive.
const CLOCK_ALLOWANCE: Duration = Duration::from_secs(60);

/// How long a retryably failed message stays invisible before its next delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Delay after the first failed delivery (before jitter).
    pub base: Duration,
    /// Cap of the delay (before jitter).
    pub max: Duration,
}

impl BackoffPolicy {
    /// The delay after delivery number `receive_count` failed (`ApproximateReceiveCount`, from
    /// 1): `base * 2^(receive_count - 1)`, capped at `max`, then jittered into its upper half so
    /// that messages failed together do not come back together. `jitter` is in `[0, 1)`.
    ///
    /// The result is in whole seconds (what `ChangeMessageVisibility` takes), at least one
    /// second, and never beyond SQS's 12-hour limit.
    pub fn delay(&self, receive_count: u32, jitter: f64) -> Duration {
        let doublings = receive_count.saturating_sub(1).min(30);
        let ceiling = self
            .base
            .saturating_mul(1 << doublings)
            .min(self.max)
            .min(MAX_VISIBILITY);
        let half = ceiling / 2;
        let jittered = half + half.mul_f64(jitter.clamp(0.0, 1.0));
        whole_seconds(jittered)
    }
}

/// `delay` rounded up to whole seconds (what `ChangeMessageVisibility` takes), at least one
/// second and at most SQS's 12-hour limit.
pub(crate) fn whole_seconds(delay: Duration) -> Duration {
    let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    Duration::from_secs(seconds.max(1)).min(MAX_VISIBILITY)
}

/// The longest visibility timeout SQS accepts for a message whose record carries `attributes`,
/// when the request is made at `now`.
///
/// SQS rejects a `ChangeMessageVisibility` that would keep a message invisible more than 12 hours
/// after it was received (the total from the receive, however many changes), rather than cutting
/// it to what is left. The record does not carry its receive time, but
/// `ApproximateFirstReceiveTimestamp` (epoch ms) is never later than it, so 12 hours from there
/// is always accepted; and since a delivery is in flight at most [`LONGEST_DELIVERY`] before the
/// processor changes it, no more than that is counted, so a message first received days ago
/// still gets its full backoff. Without the attribute the delivery is taken to be that old.
pub(crate) fn visibility_limit(attributes: &HashMap<String, String>, now: SystemTime) -> Duration {
    let in_flight = attributes
        .get("ApproximateFirstReceiveTimestamp")
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
        .map_or(LONGEST_DELIVERY, |received| {
            now.duration_since(received)
                .unwrap_or_default()
                .min(LONGEST_DELIVERY)
        });
    let left = MAX_VISIBILITY.saturating_sub(in_flight + CLOCK_ALLOWANCE);
    Duration::from_secs(left.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const POLICY: BackoffPolicy = BackoffPolicy {
        base: Duration::from_secs(4),
        max: Duration::from_secs(300),
    };

    #[test]
    fn delay_doubles_with_each_delivery() {
        let delays: Vec<u64> = (1..=5).map(|n| POLICY.delay(n, 0.999).as_secs()).collect();
        assert_eq!(delays, [4, 8, 16, 32, 64]);
    }

    #[test]
    fn delay_is_capped() {
        assert_eq!(POLICY.delay(20, 0.999), Duration::from_secs(300));
        assert_eq!(POLICY.delay(u32::MAX, 0.999), Duration::from_secs(300));
    }

    #[test]
    fn jitter_keeps_the_delay_in_the_upper_half() {
        assert_eq!(POLICY.delay(3, 0.0), Duration::from_secs(8));
    }

    #[test]
    fn delay_never_exceeds_the_sqs_visibility_limit() {
        let huge = BackoffPolicy {
            base: Duration::from_secs(3600),
            max: Duration::from_secs(100_000),
        };
        assert_eq!(huge.delay(10, 0.0), MAX_VISIBILITY / 2);
        assert!(huge.delay(10, 0.999_999) <= MAX_VISIBILITY);
    }

    /// A time in whole milliseconds, as SQS timestamps are.
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_000_000_123)
    }

    fn first_received(ago: Duration, now: SystemTime) -> HashMap<String, String> {
        let ms = (now - ago)
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        HashMap::from([(
            "ApproximateFirstReceiveTimestamp".to_owned(),
            ms.to_string(),
        )])
    }

    #[test]
    fn the_visibility_limit_counts_twelve_hours_from_the_receive() {
        let now = now();
        let limit = visibility_limit(&first_received(Duration::from_secs(300), now), now);
        assert_eq!(
            limit,
            MAX_VISIBILITY - Duration::from_secs(300) - CLOCK_ALLOWANCE
        );
    }

    #[test]
    fn a_delivery_counts_as_at_most_as_old_as_a_delivery_can_be() {
        let now = now();
        let longest = MAX_VISIBILITY - LONGEST_DELIVERY - CLOCK_ALLOWANCE;
        let days_ago = first_received(Duration::from_secs(3 * 86_400), now);
        assert_eq!(visibility_limit(&days_ago, now), longest);
        assert_eq!(visibility_limit(&HashMap::new(), now), longest);
        let garbled = HashMap::from([(
            "ApproximateFirstReceiveTimestamp".to_owned(),
            "soon".to_owned(),
        )]);
        assert_eq!(visibility_limit(&garbled, now), longest);
    }

    #[test]
    fn a_receive_timestamp_ahead_of_the_clock_counts_as_now() {
        let now = now();
        let ahead = first_received(Duration::ZERO, now + Duration::from_secs(30));
        assert_eq!(
            visibility_limit(&ahead, now),
            MAX_VISIBILITY - CLOCK_ALLOWANCE
        );
    }

    proptest! {
        #[test]
        fn delay_stays_within_half_and_whole_of_its_ceiling(count in 1u32..40, jitter in 0.0f64..1.0) {
            let delay = POLICY.delay(count, jitter);
            let ceiling = (POLICY.base.as_secs() << (count - 1).min(30)).min(POLICY.max.as_secs());
            prop_assert!(delay.as_secs() >= ceiling / 2);
            prop_assert!(delay.as_secs() <= ceiling);
        }
    }
}
