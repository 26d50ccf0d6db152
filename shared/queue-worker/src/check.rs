//! The check-config mode: a function's binary, started with `QUEUE_WORKER_CHECK_CONFIG=1`
//! ([`VARIABLE`]), reads its whole configuration from its environment as its normal start does
//! (the settings every worker shares, the function's own, the logs', the SDK's), contacts nothing
//! (no AWS call, no Lambda Runtime API), prints one JSON line ([`Report`]) to stdout and exits:
//! status 0 when the configuration is good, 1 when it is not.
//!
//! ```text
//! {"ok":true,"read":["BATCH_CONCURRENCY",...],"config":"FunctionConfig { .. }"}
//! {"ok":false,"error":"environment variable IDEMPOTENCY_TABLE is required but not set"}
//! ```
//!
//! `read` is every variable the code looked up, set or not (a recording [`Env`]), and `config`
//! the `Debug` of what was read, defaults included. Together they let a test check a deployment's
//! environment against the code itself, with no list of variables kept by hand: a variable set
//! but never read is a typo or a leftover; a variable whose removal leaves `config` unchanged
//! repeats the code's default. The entries of [`crate::lambda`] ([`run_worker`] and [`start`])
//! implement it; without the variable they cost one lookup in the environment they read anyway.
//!
//! [`run_worker`]: crate::lambda::run_worker
//! [`start`]: crate::lambda::start

use std::io::Write as _;

use serde::{Deserialize, Serialize};

use crate::Env;

/// The variable that selects the check-config mode, with the value `1`. Never set it on a
/// deployed function: each start would print its configuration and exit.
pub const VARIABLE: &str = "QUEUE_WORKER_CHECK_CONFIG";

/// Whether `env` asks for the check-config mode (looked up without being recorded).
pub(crate) fn requested(env: &Env) -> bool {
    env.peek(VARIABLE) == Some("1")
}

/// The line the check-config mode prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Whether the function can start with this environment.
    pub ok: bool,
    /// Every variable the code looked up, sorted (when `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Vec<String>>,
    /// The configuration read, as `Debug` text (when `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// Why the function cannot start (when not `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A configuration the check read: every variable looked up, and the configuration as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Every variable the code looked up, sorted.
    pub read: Vec<String>,
    /// The configuration read, as `Debug` text.
    pub config: String,
}

impl Report {
    /// The report of a check of the recording `env`: what it read, or why it failed.
    pub fn of<E: std::fmt::Display>(env: &Env, outcome: Result<String, E>) -> Self {
        match outcome {
            Ok(config) => Self {
                ok: true,
                read: Some(env.looked_up()),
                config: Some(config),
                error: None,
            },
            Err(error) => Self {
                ok: false,
                read: None,
                config: None,
                error: Some(error.to_string()),
            },
        }
    }

    /// The configuration checked, or why the function cannot start.
    pub fn outcome(self) -> Result<Checked, String> {
        match self {
            Self {
                ok: true,
                read,
                config: Some(config),
                ..
            } => Ok(Checked {
                read: read.unwrap_or_default(),
                config,
            }),
            Self {
                error: Some(error), ..
            } => Err(error),
            other => Err(format!("a malformed check report: {other:?}")),
        }
    }

    /// Prints the report as one JSON line and ends the process: status 0 when `ok`, else 1.
    pub(crate) fn print_and_exit(&self) -> ! {
        let line = serde_json::to_string(self).expect("a report serialises");
        let mut stdout = std::io::stdout().lock();
        // Nothing is left to report a failed write to: the exit status still tells.
        let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
        std::process::exit(if self.ok { 0 } else { 1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;

    #[test]
    fn only_the_value_1_selects_the_mode_and_asking_is_not_recorded() {
        for (value, expected) in [("1", true), ("0", false), ("", false), ("yes", false)] {
            let env = Env::from_pairs([(VARIABLE, value)]).recording();
            assert_eq!(requested(&env), expected, "{VARIABLE}={value:?}");
            assert!(env.looked_up().is_empty());
        }
        assert!(!requested(&Env::default()));
    }

    #[test]
    fn a_good_configuration_reports_what_was_read_and_a_bad_one_its_error() {
        let env = Env::from_pairs([("B", "2")]).recording();
        let _ = (env.get("B"), env.get("A"));
        let report = Report::of::<ConfigError>(&env, Ok("Config { b: 2 }".into()));
        let line = serde_json::to_string(&report).unwrap();
        assert_eq!(
            line,
            r#"{"ok":true,"read":["A","B"],"config":"Config { b: 2 }"}"#
        );
        let parsed: Report = serde_json::from_str(&line).unwrap();
        assert_eq!(
            parsed.outcome(),
            Ok(Checked {
                read: vec!["A".into(), "B".into()],
                config: "Config { b: 2 }".into()
            })
        );

        let error = ConfigError::Missing { name: "A".into() };
        let report = Report::of::<ConfigError>(&env, Err(error));
        let line = serde_json::to_string(&report).unwrap();
        assert_eq!(
            line,
            r#"{"ok":false,"error":"environment variable A is required but not set"}"#
        );
        assert_eq!(
            serde_json::from_str::<Report>(&line).unwrap().outcome(),
            Err("environment variable A is required but not set".into())
        );
    }
}
