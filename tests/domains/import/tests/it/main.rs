//! The import example's integration tests, against a real AWS API endpoint (the emulator that
//! `make test` starts).
