//! The local runner: the whole pipeline on a laptop, against the no-Docker emulator or
//! LocalStack.
//!
//! `sam local` cannot trigger a function from SQS. [`esm`] emulates the SQS event source
//! mapping instead, with the template's settings and the exact rules Lambda applies to a
//! partial batch response. [`template`] reads `template.yaml`, the single source of truth,
//! and [`provision`] creates the same queues, tables and bucket on the local endpoint.
//! [`demo`] fires a burst of imports and checks every outcome; [`chaos`] does the same under
//! kills, duplicate deliveries, faults on every AWS call path and a capacity-limited downstream,
//! and measures it. Both import the files of [`sample`], which repeat SKUs with changing values,
//! and check that every SKU holds its file's last value.
//!
//! [`host`] runs any function of the template as processes of its own binary, each polling a
//! local [`runtime_api`], behind the same mapping: `local-runner serve-queues` drives every
//! SQS-triggered function of the template that way, with no code that names one.

pub mod chaos;
pub mod demo;
pub mod esm;
pub mod flaky;
pub mod host;
pub mod pipeline;
pub mod provision;
pub mod runtime_api;
mod sample;
pub mod template;
