//! The integration tests: one test binary, so the AWS SDKs are linked once.
//!
//! Each module tests one part against a real AWS API endpoint (the emulator `make test` starts,
//! or LocalStack); `guard_memory`, `layout` and `template` need none. Every test creates its own uniquely
//! named resources (see the `harness` crate).

mod batch_sqs;
mod esm;
mod guard_dynamodb;
mod guard_memory;
mod job_queue;
mod layout;
mod ops;
mod process_host;
mod template;
