//! Tracing set-up.
//!
//! In Lambda, logs are JSON (one object per line, span fields flattened in), which CloudWatch
//! Logs Insights can query by field: `message_id`, `job_id`. On a terminal they are compact
//! text. The level comes from `RUST_LOG`, else from the `AWS_LAMBDA_LOG_LEVEL` that Lambda sets
//! from the function's logging configuration, else `info`.
//!
//! `RUST_LOG` takes a level (`debug`) or comma-separated `target=level` directives
//! (`info,aws_smithy_runtime=debug`). Span and field filters (`[span{field=value}]`) are not
//! supported: the filter is a [`Targets`], which decides per call site once, instead of the
//! `EnvFilter` that would link a regex engine into every function for a feature that a
//! Lambda's log level does not need.
//!
//! Spans get W3C trace context from [`crate::trace::layer`]: inside a request's or a record's span
//! every line carries its `trace_id` and `span_id`. The level filters log lines; when spans are
//! exported, the trace gets every span and event at `info` and above whatever the level.
//!
//! Never log message bodies or secrets: log identifiers and outcomes, and errors with their
//! cause chain ([`error_chain`]).

use tracing_subscriber::Registry;
use tracing_subscriber::filter::{FilterExt as _, LevelFilter, Targets};
use tracing_subscriber::layer::{Filter, Layer as _, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::Env;

/// Installs the global tracing subscriber, with the settings in the process environment. Call
/// once, first thing in `main` (a Lambda entry of [`crate::lambda`] calls it itself).
pub fn init() {
    init_with_default_level("info");
}

/// Like [`init`], with `level` when neither `RUST_LOG` nor `AWS_LAMBDA_LOG_LEVEL` is set.
pub fn init_with_default_level(level: &str) {
    LogSettings::from_env(&Env::from_process(), level).install();
}

/// How a function logs, read from its environment: the filter, and the format.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// From `RUST_LOG`, else `AWS_LAMBDA_LOG_LEVEL`, else the default level.
    pub filter: Targets,
    /// JSON lines: in Lambda (`AWS_LAMBDA_FUNCTION_NAME` is set) unless its logging
    /// configuration asks for text (`AWS_LAMBDA_LOG_FORMAT`).
    pub json: bool,
    /// Coloured text: on a terminal, not in Lambda.
    pub ansi: bool,
    /// Where spans go ([`crate::trace::TraceSettings`]): nowhere by default.
    pub trace: crate::trace::TraceSettings,
}

impl LogSettings {
    /// Reads the settings, with `level` when neither `RUST_LOG` nor `AWS_LAMBDA_LOG_LEVEL` is
    /// set (or usable).
    pub fn from_env(env: &Env, level: &str) -> Self {
        let var = |name: &str| env.get(name).map(str::to_owned);
        let in_lambda = var("AWS_LAMBDA_FUNCTION_NAME").is_some();
        let text_requested =
            var("AWS_LAMBDA_LOG_FORMAT").is_some_and(|format| format.eq_ignore_ascii_case("text"));
        Self {
            filter: filter(var, level),
            json: in_lambda && !text_requested,
            ansi: !in_lambda,
            trace: crate::trace::TraceSettings::from_env(env),
        }
    }

    /// Installs the global tracing subscriber with these settings.
    pub fn install(self) {
        let registry = tracing_subscriber::registry()
            .with(crate::trace::layer(&self.trace).with_filter(self.trace_filter()));
        if self.json {
            registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_current_span(false)
                        .with_span_list(true)
                        .with_target(false)
                        .with_filter(self.filter),
                )
                .init();
        } else {
            registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .compact()
                        .with_ansi(self.ansi)
                        .with_filter(self.filter),
                )
                .init();
        }
    }

    /// What the trace layer sees: what is logged, and, when spans are exported, every span and
    /// event at `info` and above whatever the log level, so that a quiet log (a level of
    /// `error`) still exports each request's and each record's span. Export off, the layer sees
    /// only what is logged, as one global filter would let through.
    fn trace_filter(&self) -> impl Filter<Registry> + use<> {
        let exported = if self.trace.otlp_endpoint.is_some() {
            LevelFilter::INFO
        } else {
            LevelFilter::OFF
        };
        self.filter.clone().or(exported)
    }
}

/// The filter from `RUST_LOG`, else `AWS_LAMBDA_LOG_LEVEL`, else `default`; a value that does
/// not parse is passed over. Lambda's `FATAL` is `error` here: tracing has no level above it.
/// Both variables are read whichever is used, so the set of variables read does not depend on
/// their values.
fn filter(var: impl Fn(&str) -> Option<String>, default: &str) -> Targets {
    let level = |value: &str| {
        let value = if value.eq_ignore_ascii_case("fatal") {
            "error"
        } else {
            value
        };
        value.parse::<LevelFilter>().ok()
    };
    let rust_log = var("RUST_LOG");
    let lambda_level = var("AWS_LAMBDA_LOG_LEVEL");
    rust_log
        .filter(|value| !value.trim().is_empty())
        .and_then(|value| value.parse::<Targets>().ok())
        .or_else(|| {
            let level = lambda_level.and_then(|value| level(&value))?;
            Some(Targets::new().with_default(level))
        })
        .unwrap_or_else(|| Targets::new().with_default(level(default).unwrap_or(LevelFilter::INFO)))
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

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    fn filter_with(vars: &[(&str, &str)], default: &str) -> Targets {
        filter(
            |name| {
                vars.iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            },
            default,
        )
    }

    /// The most verbose level `filter` lets through for `target`, if any.
    fn most_verbose(filter: &Targets, target: &str) -> Option<Level> {
        [
            Level::TRACE,
            Level::DEBUG,
            Level::INFO,
            Level::WARN,
            Level::ERROR,
        ]
        .into_iter()
        .find(|level| filter.would_enable(target, level))
    }

    #[test]
    fn rust_log_directives_come_first() {
        let filter = filter_with(
            &[
                ("RUST_LOG", "warn,aws_smithy_runtime=debug"),
                ("AWS_LAMBDA_LOG_LEVEL", "ERROR"),
            ],
            "info",
        );
        assert_eq!(most_verbose(&filter, "my_worker"), Some(Level::WARN));
        assert_eq!(
            most_verbose(&filter, "aws_smithy_runtime::client"),
            Some(Level::DEBUG)
        );
    }

    #[test]
    fn lambdas_log_level_applies_when_rust_log_is_unset_empty_or_invalid() {
        for rust_log in [None, Some(""), Some("not a level=at all=")] {
            let mut vars = vec![("AWS_LAMBDA_LOG_LEVEL", "DEBUG")];
            vars.extend(rust_log.map(|value| ("RUST_LOG", value)));
            let filter = filter_with(&vars, "info");
            assert_eq!(
                most_verbose(&filter, "my_producer"),
                Some(Level::DEBUG),
                "RUST_LOG={rust_log:?}"
            );
        }
    }

    #[test]
    fn lambdas_fatal_is_error() {
        let filter = filter_with(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")], "info");
        assert_eq!(most_verbose(&filter, "my_worker"), Some(Level::ERROR));
    }

    #[test]
    fn the_default_level_applies_last() {
        let filter = filter_with(&[], "warn");
        assert_eq!(most_verbose(&filter, "my_worker"), Some(Level::WARN));
        let filter = filter_with(&[("AWS_LAMBDA_LOG_LEVEL", "loud")], "error");
        assert_eq!(most_verbose(&filter, "my_worker"), Some(Level::ERROR));
    }

    #[test]
    fn exported_traces_get_info_spans_whatever_the_log_level() {
        let quiet = |endpoint: Option<&str>| {
            let mut vars = vec![("RUST_LOG", "error")];
            vars.extend(endpoint.map(|url| ("OTEL_EXPORTER_OTLP_ENDPOINT", url)));
            LogSettings::from_env(&Env::from_pairs(vars), "info").trace_filter()
        };
        let exporting = quiet(Some("http://127.0.0.1:4318"));
        assert_eq!(
            Filter::<Registry>::max_level_hint(&exporting),
            Some(LevelFilter::INFO)
        );
        let logging_only = quiet(None);
        assert_eq!(
            Filter::<Registry>::max_level_hint(&logging_only),
            Some(LevelFilter::ERROR)
        );
    }
}
