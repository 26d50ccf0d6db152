//! The benchmark machinery of `make bench` that is not criterion or a domain's own bench: the
//! init time of a binary ([`init_time`]), the cold start over TLS of a function under a fake
//! Runtime API ([`cold_start`], with the events of a domain's [`cold_start::Workload`]), the TLS
//! listeners it counts handshakes with ([`tls_proxy`]), and the report ([`report`]). Nothing
//! here names a worker: a domain's driver runs the cold start with its own workload.

pub mod cold_start;
pub mod init_time;
pub mod report;
pub mod tls_proxy;
