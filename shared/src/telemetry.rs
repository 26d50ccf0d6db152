//! Tracing set-up.
//!
//! In Lambda, logs are JSON (one object per line, span fields flattened in), which CloudWatch
//! Logs Insights can query by field: `message_id`, `import_id`. On a terminal they are compact
//! text. The level comes from `RUST_LOG`, else from the `AWS_LAMBDA_LOG_LEVEL` that Lambda sets
//! from the function's logging configuration, else `info`.
//!
//! Never log message bodies or secrets: log identifiers and outcomes, and errors with their
//! cause chain ([`error_chain`]).

use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber. Call once, first thing in `main`.
pub fn init() {
    init_with_default_level("info");
}

/// Like [`init`], with `level` when neither `RUST_LOG` nor `AWS_LAMBDA_LOG_LEVEL` is set.
pub fn init_with_default_level(level: &str) {
    let in_lambda = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some();
    let text_requested = std::env::var("AWS_LAMBDA_LOG_FORMAT")
        .is_ok_and(|format| format.eq_ignore_ascii_case("text"));
    let filter = EnvFilter::try_from_default_env()
        .ok()
        .or_else(|| {
            let level = std::env::var("AWS_LAMBDA_LOG_LEVEL").ok()?;
            EnvFilter::try_new(level.to_ascii_lowercase()).ok()
        })
        .unwrap_or_else(|| EnvFilter::new(level));

    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if in_lambda && !text_requested {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_target(false)
            .init();
    } else {
        builder.compact().with_ansi(!in_lambda).init();
    }
}

/// An error and its causes on one line: `outer: cause: root cause`.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
