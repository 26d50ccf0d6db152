//! The driver's demo and chaos paths against the emulator: `template.yaml` provisioned under a
//! name of each test's own, the real notifier binary built by cargo and hosted as processes
//! behind its queue's mapping, a fake partner counting calls and effects per key.

use std::path::Path;
use std::time::Duration;

use notifier_tests::driver::{self, ChaosKnobs, Common};
use notifier_tests::partner::PartnerBehaviour;

/// Only a broken pipeline takes this long for a few dozen notifications.
const PATIENCE: Duration = Duration::from_secs(300);

fn common() -> Common {
    Common {
        template: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../template.yaml"),
        stack: harness::unique_name("it"),
        profile: "dev".into(),
        maximum_concurrency: Some(2),
        function_timeout: None,
        flaky_partner: 0.0,
        function_environment: Vec::new(),
    }
}

/// Partner faults only, no kills, no duplicate deliveries and no faults at the library's seams:
/// the repeats come from the worker's retries after a call that acted and then failed.
fn acting_then_failing(honours_key: bool) -> ChaosKnobs {
    ChaosKnobs {
        kill_rate: 0.0,
        duplicate_rate: 0.0,
        seam_fault_rate: 0.0,
        partner: PartnerBehaviour {
            honours_key,
            fail_after_effect_rate: 0.3,
            ..PartnerBehaviour::default()
        },
        ..ChaosKnobs::default()
    }
}

#[tokio::test]
async fn the_demo_delivers_every_notification_once_through_the_real_binary() {
    let outcome = driver::demo(&common(), 20, PATIENCE).await.unwrap();

    let verdict = &outcome.verdict;
    assert!(verdict.passed(), "{:?}", verdict.problems);
    assert_eq!(verdict.requested, 20);
    assert_eq!(verdict.delivered, 20);
    assert_eq!(verdict.effects_per_key, (1, 1));
    assert_eq!(verdict.duplicates, 0);
    assert_eq!(outcome.observed.sent.calls, 20 + 7 + 3, "client retries");
    assert!(outcome.observed.partner.calls >= 20);
    assert!(outcome.invocations.total > 0);
}

#[tokio::test]
async fn under_chaos_every_notification_takes_effect_once() {
    // The library's own calls fail far more often than in a soak, so that each seam is hit.
    let knobs = ChaosKnobs {
        seam_fault_rate: 0.25,
        ..ChaosKnobs::default()
    };
    let (outcome, _) = driver::chaos(&common(), 30, PATIENCE, &knobs)
        .await
        .unwrap();

    let verdict = &outcome.verdict;
    assert!(verdict.passed(), "{:?}", verdict.problems);
    assert_eq!(verdict.delivered, 30);
    assert_eq!(verdict.effects_per_key, (1, 1));
    assert_eq!(verdict.duplicates, 0);
    // The binary ran with the library's fault injectors: claims, completes and partner calls
    // failed (half of them after the write or the call was made), and the check still holds.
    for seam in ["guard.try_claim", "guard.complete", "dependency.call"] {
        assert!(
            outcome.seam_faults.get(seam).is_some_and(|&n| n > 0),
            "no fault at {seam}: {:?}",
            outcome.seam_faults
        );
    }
}

#[tokio::test]
async fn the_chaos_check_fails_against_a_partner_that_ignores_the_key() {
    let (outcome, _) = driver::chaos(&common(), 20, PATIENCE, &acting_then_failing(false))
        .await
        .unwrap();

    let verdict = &outcome.verdict;
    assert!(!verdict.passed());
    assert!(verdict.repeated_calls > 0, "the faults repeated calls");
    assert_eq!(verdict.duplicates as u64, verdict.repeated_calls);
    assert!(verdict.effects_per_key.1 >= 2);
}

#[tokio::test]
async fn the_same_repeated_calls_to_a_partner_that_honours_the_key_act_once() {
    let (outcome, _) = driver::chaos(&common(), 20, PATIENCE, &acting_then_failing(true))
        .await
        .unwrap();

    let verdict = &outcome.verdict;
    assert!(verdict.passed(), "{:?}", verdict.problems);
    assert!(verdict.repeated_calls > 0, "the faults repeated calls");
    assert_eq!(verdict.duplicates, 0);
}
