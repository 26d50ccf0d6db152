//! Operating a queue worker's pipeline: the dead-letter queue (list, redrive, purge) and the health of
//! both queues. The `queue-ops` binary is the command-line face of this library; tests drive
//! the library directly.
//!
//! A worker's queue and its dead-letter queue are found among a stack's queues on AWS
//! ([`locate::Target::Stack`]), by the local runner's naming on an emulator
//! ([`locate::Target::Local`]), or from explicit URLs: the queue with a redrive policy (or the
//! one named by its logical id, when there are several), and the queue its policy names.
//!
//! Everything here is safe to interrupt: listing restores visibility, and the redrive loop sends
//! a message to its source queue before it deletes it from the dead-letter queue, so a crash can
//! duplicate a message (the consumer is idempotent) but never lose one.

pub mod dlq;
pub mod error;
pub mod locate;
pub mod redrive;
pub mod stats;
pub mod text;

pub use error::OpsError;
pub use locate::{Queues, Target};
