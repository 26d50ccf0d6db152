//! The local runner: the template's queue workers on a laptop, against the no-Docker emulator or
//! LocalStack.
//!
//! `sam local` cannot trigger a function from SQS. [`esm`] emulates the SQS event source
//! mapping instead, with the template's settings and the exact rules Lambda applies to a
//! partial batch response. [`template`] reads `template.yaml`, the single source of truth,
//! and [`provision`] creates the same queues, tables and bucket on the local endpoint.
//!
//! [`host`] runs any function of the template as processes of its own binary, each polling a
//! local [`runtime_api`], behind the same mapping: `local-runner serve-queues` drives every
//! SQS-triggered function of the template that way, with no code that names one.
//!
//! [`traces`] collects the spans the functions export (an OTLP/HTTP receiver on 127.0.0.1) and
//! prints one job's tree of them: `local-runner trace ID`.
//!
//! Nothing here names a worker: what only a domain knows (how to make a request, what a correct
//! outcome is) lives with that domain's tooling under `tests/domains/`.

pub mod esm;
pub mod host;
pub mod provision;
pub mod runtime_api;
pub mod template;
pub mod traces;
