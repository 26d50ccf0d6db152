//! The import example's integration tests: one test binary, so the AWS SDKs are linked once.
//!
//! Each module tests one part against a real AWS API endpoint (the emulator `make test` starts,
//! or LocalStack); `template` needs none. Every test creates its own uniquely named resources
//! (see the `harness` crate).

mod processor;
mod producer_api;
mod provision;
mod template;
mod trace;
