use super::*;

/// Two notifications, each delivered with one effect of its own payload, one called twice.
fn clean() -> Observed {
    let notifications: Vec<(NotificationId, String)> = (0..2)
        .map(|n| {
            let id = NotificationId::generate();
            (id, payload(n, id))
        })
        .collect();
    let ledger = notifications
        .iter()
        .enumerate()
        .map(|(n, (id, payload))| {
            let calls = 1 + n as u32;
            let entry = KeyLedger {
                calls,
                accepted: calls,
                effects: vec![payload.clone()],
            };
            (id.partner_key(), entry)
        })
        .collect();
    Observed {
        statuses: notifications
            .iter()
            .map(|(id, _)| (*id, Some(NotificationStatus::Delivered)))
            .collect(),
        notifications,
        ledger,
        partner: PartnerStats {
            calls: 3,
            ..PartnerStats::default()
        },
        parked: Vec::new(),
        sent: Sent::default(),
        drained: true,
    }
}

#[test]
fn one_effect_per_notification_with_its_own_payload_passes() {
    let verdict = check(&clean());

    assert!(verdict.passed(), "{:?}", verdict.problems);
    assert_eq!(verdict.delivered, 2);
    assert_eq!((verdict.lost, verdict.duplicates), (0, 0));
    assert_eq!(verdict.effects_per_key, (1, 1));
    assert_eq!(verdict.calls_per_key, (2, 1.5));
    assert_eq!(verdict.repeated_calls, 1);
    assert_eq!(verdict.goodput, Some(2.0 / 3.0));
}

#[test]
fn a_second_effect_under_a_key_is_a_duplicate() {
    let mut observed = clean();
    let (id, payload) = observed.notifications[0].clone();
    observed
        .ledger
        .get_mut(&id.partner_key())
        .unwrap()
        .effects
        .push(payload);

    let verdict = check(&observed);

    assert!(!verdict.passed());
    assert_eq!(verdict.duplicates, 1);
    assert_eq!(verdict.effects_per_key, (1, 2));
}

#[test]
fn an_effect_with_another_notifications_payload_fails() {
    let mut observed = clean();
    let other = observed.notifications[1].1.clone();
    let key = observed.notifications[0].0.partner_key();
    observed.ledger.get_mut(&key).unwrap().effects = vec![other];

    let verdict = check(&observed);

    assert!(!verdict.passed());
    assert_eq!(verdict.duplicates, 1);
}

#[test]
fn an_effect_under_the_key_of_no_notification_fails() {
    let mut observed = clean();
    observed.ledger.insert(
        "notification-stray".into(),
        KeyLedger {
            calls: 1,
            accepted: 1,
            effects: vec!["{}".into()],
        },
    );

    let verdict = check(&observed);

    assert!(!verdict.passed());
    assert_eq!(verdict.duplicates, 1);
}

#[test]
fn a_pending_notification_is_lost_unless_parked_with_a_reason() {
    let mut observed = clean();
    let (id, _) = observed.notifications[0].clone();
    observed
        .statuses
        .insert(id, Some(NotificationStatus::Pending));
    observed.ledger.remove(&id.partner_key());
    assert_eq!(check(&observed).lost, 1);

    observed
        .parked
        .push((Some(id.to_string()), "partner_rejected".into()));
    let verdict = check(&observed);

    assert_eq!(verdict.lost, 0);
    assert_eq!(verdict.parked["partner_rejected"], 1);
    assert!(!verdict.passed(), "nothing here should be parked");
}

#[test]
fn a_notification_marked_delivered_without_an_effect_fails() {
    let mut observed = clean();
    let key = observed.notifications[0].0.partner_key();
    observed.ledger.remove(&key);

    let verdict = check(&observed);

    assert!(!verdict.passed());
    assert_eq!(verdict.effects_per_key, (0, 1));
}
