//! The notifier example's integration tests: one test binary, so the AWS SDKs are linked once.
//!
//! Each module tests against a real AWS API endpoint (the emulator `make test` starts, or
//! LocalStack). Every test creates its own uniquely named resources (see the `harness` crate).
//! `notifier` runs the worker in process; `driver` hosts its real binary; `cold_start` times it
//! under a fake Runtime API over TLS.

mod cold_start;
mod driver;
mod notifier;
