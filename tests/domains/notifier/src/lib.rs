//! The notifier example's tooling, kept with its domain: what only the notifier knows (how to
//! request a notification, what a correct outcome is, how its partner misbehaves), on top of
//! the generic local runner (`local_runner`: the template, provisioning, the event source
//! mapping, the process host).
//!
//! Nothing here runs the notifier in process: [`hosted`] provisions `template.yaml` and hosts
//! the real `NotifierFunction` binary as processes under a local Lambda Runtime API, behind
//! its queue's emulated mapping, with `PARTNER_URL` pointing at a [`partner::FakePartner`] that
//! acts once per `Idempotency-Key` and counts calls and effects per key. [`soak`] requests a
//! burst of notifications through the sender's code (`notifier::request`), drains the queue
//! and checks every notification took effect exactly once. The binary, `notifier-driver`, runs
//! it (`make run`, `make demo`, `make chaos`): `demo` with a well-behaved partner, `chaos`
//! with kills, duplicate deliveries, a faulty and capacity-limited partner.
//!
//! [`cold_start`] is its workload for `make bench`'s cold start over TLS.
//!
//! The integration tests (`tests/it`) run the notifier's processor in process against a
//! counting fake, and the driver's demo and chaos paths against the emulator.

pub mod cold_start;
pub mod driver;
pub mod hosted;
pub mod partner;
pub mod soak;
