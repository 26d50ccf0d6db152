//! Exponential, jittered, capped redelivery delay for retryable failures.

use std::time::Duration;

/// The visibility timeout SQS accepts at most (12 hours).
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

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
