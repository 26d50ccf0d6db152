//! Typed configuration, read once at start-up.
//!
//! Every setting comes from an environment variable, because that is how the SAM template hands
//! settings to a Lambda function. Each configuration struct reads its variables through [`Env`],
//! which turns a missing or malformed value into a [`ConfigError`] that names the variable, so a
//! misconfigured deployment fails at init with a message that says what to fix.
//!
//! Which variables a function reads is not listed by hand: a recording [`Env`] notes every
//! lookup, and the check-config mode ([`crate::check`]) reports them, so a test can check that
//! the template sets exactly what the code reads.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Display;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// A configuration value is missing or malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is not set (or is empty).
    #[error("environment variable {name} is required but not set")]
    Missing {
        /// The variable's name.
        name: String,
    },
    /// A variable is set but cannot be used.
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable's name.
        name: String,
        /// The value found.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
}

/// A snapshot of environment variables to read typed settings from.
///
/// Production code uses [`Env::from_process`]; tests build one from pairs, so they never mutate
/// the process environment (which is shared by every test thread).
///
/// A [`recording`](Self::recording) environment also notes every name looked up, set or not,
/// which is how the check-config mode ([`crate::check`]) reports the variables a function reads
/// without a list kept by hand.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
    /// The names looked up, when recording; shared by clones.
    lookups: Option<Arc<Mutex<BTreeSet<String>>>>,
}

impl Env {
    /// Captures the current process environment.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
            lookups: None,
        }
    }

    /// Builds an environment from explicit name/value pairs.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            lookups: None,
        }
    }

    /// This environment, noting from now on every name looked up (by it and by its clones).
    pub fn recording(self) -> Self {
        Self {
            lookups: Some(Arc::default()),
            ..self
        }
    }

    /// The names looked up since [`recording`](Self::recording) began, sorted; none when not
    /// recording.
    pub fn looked_up(&self) -> Vec<String> {
        self.lookups
            .as_ref()
            .map(|names| {
                let names = names.lock().unwrap_or_else(PoisonError::into_inner);
                names.iter().cloned().collect()
            })
            .unwrap_or_default()
    }

    /// The value of `name`, treating an empty value as unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        if let Some(names) = &self.lookups {
            names
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name.to_owned());
        }
        self.peek(name)
    }

    /// [`get`](Self::get) without recording the lookup: for the library's own switches, which
    /// are no setting of the function.
    pub(crate) fn peek(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// A required string setting.
    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.get(name)
            .map(str::to_owned)
            .ok_or_else(|| ConfigError::Missing { name: name.into() })
    }

    /// An optional setting parsed with [`FromStr`], or `default` when unset.
    pub fn parsed_or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e: T::Err| ConfigError::Invalid {
                    name: name.into(),
                    value: raw.into(),
                    reason: e.to_string(),
                }),
        }
    }

    /// An optional whole number that must be at least 1, or `default` when unset.
    pub fn positive_or(&self, name: &str, default: u64) -> Result<u64, ConfigError> {
        let value: u64 = self.parsed_or(name, default)?;
        if value == 0 {
            return Err(ConfigError::Invalid {
                name: name.into(),
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(value)
    }

    /// An optional duration given in whole seconds (at least 1: every duration setting here is
    /// a timeout, lease or retention), or `default` when unset.
    pub fn seconds_or(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        self.positive_or(name, default.as_secs())
            .map(Duration::from_secs)
    }
}

/// Settings of the idempotency guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    /// DynamoDB table holding idempotency records (`IDEMPOTENCY_TABLE`).
    pub table_name: String,
    /// How long a completed record suppresses duplicates (`IDEMPOTENCY_RETENTION_SECONDS`,
    /// default 14 days: a message cannot outlive that in SQS, including a DLQ round trip).
    pub retention: Duration,
    /// Added to the invocation deadline to form the lease (`IDEMPOTENCY_LEASE_MARGIN_SECONDS`,
    /// default 10 s), so a claim outlives the invocation that made it by a little.
    pub lease_margin: Duration,
    /// Upper bound of any lease (`IDEMPOTENCY_MAX_LEASE_SECONDS`, default 910 s: Lambda's 15 min
    /// maximum timeout plus the default margin). Also the lease when no deadline is known.
    pub max_lease: Duration,
}

impl GuardConfig {
    /// Reads the guard settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let config = Self {
            table_name: env.required("IDEMPOTENCY_TABLE")?,
            retention: env.seconds_or(
                "IDEMPOTENCY_RETENTION_SECONDS",
                Duration::from_secs(14 * 24 * 3600),
            )?,
            lease_margin: env
                .seconds_or("IDEMPOTENCY_LEASE_MARGIN_SECONDS", Duration::from_secs(10))?,
            max_lease: env.seconds_or("IDEMPOTENCY_MAX_LEASE_SECONDS", Duration::from_secs(910))?,
        };
        // A record past retention is reclaimable whatever its lease says, so a retention shorter
        // than a lease would let a second worker take a live claim.
        if config.retention < config.max_lease {
            return Err(ConfigError::Invalid {
                name: "IDEMPOTENCY_RETENTION_SECONDS".into(),
                value: config.retention.as_secs().to_string(),
                reason: format!(
                    "must be at least IDEMPOTENCY_MAX_LEASE_SECONDS ({})",
                    config.max_lease.as_secs()
                ),
            });
        }
        Ok(config)
    }
}

/// Timeouts of every AWS SDK call, sized for a Lambda invocation: a call that hangs fails and is
/// retried (the SDK retries a timed-out attempt) or reported, long before the invocation's
/// deadline, instead of taking the whole invocation with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdkTimeouts {
    /// Opening a connection, TLS included (`SDK_CONNECT_TIMEOUT_MS`, default 2,000 ms). Inside an
    /// AWS region this takes tens of milliseconds.
    pub connect: Duration,
    /// One attempt of a call, until its response (`SDK_ATTEMPT_TIMEOUT_MS`, default 5,000 ms).
    /// DynamoDB and SQS answer in milliseconds; an S3 `GetObject` attempt ends with the response
    /// headers, and its body is read afterwards, under the record's own stop time.
    pub attempt: Duration,
    /// A whole call, its retries included (`SDK_OPERATION_TIMEOUT_MS`, default 15,000 ms): the
    /// SDK's three attempts with their backoff, and half of the shortest worker timeout the
    /// template allows (30 s), so the invocation still has time to report the failure.
    pub operation: Duration,
}

impl SdkTimeouts {
    /// Reads the timeouts; an attempt may not be longer than its operation, nor a connection
    /// than its attempt.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let millis =
            |name: &str, default: u64| env.positive_or(name, default).map(Duration::from_millis);
        let timeouts = Self {
            connect: millis("SDK_CONNECT_TIMEOUT_MS", 2_000)?,
            attempt: millis("SDK_ATTEMPT_TIMEOUT_MS", 5_000)?,
            operation: millis("SDK_OPERATION_TIMEOUT_MS", 15_000)?,
        };
        let longer = |name: &str, value: Duration, than: &str, limit: Duration| {
            (value > limit).then(|| ConfigError::Invalid {
                name: name.into(),
                value: value.as_millis().to_string(),
                reason: format!("must be at most {than} ({})", limit.as_millis()),
            })
        };
        if let Some(error) = longer(
            "SDK_ATTEMPT_TIMEOUT_MS",
            timeouts.attempt,
            "SDK_OPERATION_TIMEOUT_MS",
            timeouts.operation,
        )
        .or_else(|| {
            longer(
                "SDK_CONNECT_TIMEOUT_MS",
                timeouts.connect,
                "SDK_ATTEMPT_TIMEOUT_MS",
                timeouts.attempt,
            )
        }) {
            return Err(error);
        }
        Ok(timeouts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_timeouts_have_lambda_sized_defaults_and_come_from_the_environment() {
        let defaults = SdkTimeouts::from_env(&Env::default()).unwrap();
        assert_eq!(
            defaults,
            SdkTimeouts {
                connect: Duration::from_secs(2),
                attempt: Duration::from_secs(5),
                operation: Duration::from_secs(15),
            }
        );
        let env = Env::from_pairs([
            ("SDK_CONNECT_TIMEOUT_MS", "500"),
            ("SDK_ATTEMPT_TIMEOUT_MS", "1500"),
            ("SDK_OPERATION_TIMEOUT_MS", "4000"),
        ]);
        let timeouts = SdkTimeouts::from_env(&env).unwrap();
        assert_eq!(timeouts.connect, Duration::from_millis(500));
        assert_eq!(timeouts.attempt, Duration::from_millis(1500));
        assert_eq!(timeouts.operation, Duration::from_millis(4000));
    }

    #[test]
    fn an_attempt_longer_than_its_operation_is_rejected() {
        let env = Env::from_pairs([("SDK_ATTEMPT_TIMEOUT_MS", "20000")]);
        assert!(matches!(
            SdkTimeouts::from_env(&env),
            Err(ConfigError::Invalid { name, reason, .. })
                if name == "SDK_ATTEMPT_TIMEOUT_MS" && reason.contains("SDK_OPERATION_TIMEOUT_MS")
        ));
        let env = Env::from_pairs([("SDK_CONNECT_TIMEOUT_MS", "6000")]);
        assert!(matches!(
            SdkTimeouts::from_env(&env),
            Err(ConfigError::Invalid { name, .. }) if name == "SDK_CONNECT_TIMEOUT_MS"
        ));
        let env = Env::from_pairs([("SDK_OPERATION_TIMEOUT_MS", "0")]);
        assert!(SdkTimeouts::from_env(&env).is_err());
    }

    #[test]
    fn a_recording_environment_notes_every_name_looked_up_set_or_not() {
        let env = Env::from_pairs([("IDEMPOTENCY_TABLE", "t"), ("UNREAD", "x")]);
        GuardConfig::from_env(&env).unwrap();
        assert!(env.looked_up().is_empty(), "not recording");

        let env = env.recording();
        GuardConfig::from_env(&env).unwrap();
        let _ = env.clone().get("READ_BY_A_CLONE");
        assert_eq!(
            env.looked_up(),
            [
                "IDEMPOTENCY_LEASE_MARGIN_SECONDS",
                "IDEMPOTENCY_MAX_LEASE_SECONDS",
                "IDEMPOTENCY_RETENTION_SECONDS",
                "IDEMPOTENCY_TABLE",
                "READ_BY_A_CLONE",
            ]
        );
    }

    #[test]
    fn missing_required_variable_is_named() {
        let err = GuardConfig::from_env(&Env::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable IDEMPOTENCY_TABLE is required but not set"
        );
    }

    #[test]
    fn empty_value_counts_as_missing() {
        let env = Env::from_pairs([("IDEMPOTENCY_TABLE", "  ")]);
        assert!(matches!(
            GuardConfig::from_env(&env),
            Err(ConfigError::Missing { name }) if name == "IDEMPOTENCY_TABLE"
        ));
    }

    #[test]
    fn malformed_number_names_variable_and_value() {
        let env = Env::from_pairs([
            ("IDEMPOTENCY_TABLE", "t"),
            ("IDEMPOTENCY_RETENTION_SECONDS", "ten"),
        ]);
        let err = GuardConfig::from_env(&env).unwrap_err();
        assert!(matches!(&err, ConfigError::Invalid { name, value, .. }
            if name == "IDEMPOTENCY_RETENTION_SECONDS" && value == "ten"));
        assert!(
            err.to_string()
                .contains("IDEMPOTENCY_RETENTION_SECONDS=\"ten\"")
        );
    }

    #[test]
    fn zero_duration_is_rejected() {
        let env = Env::from_pairs([
            ("IDEMPOTENCY_TABLE", "t"),
            ("IDEMPOTENCY_MAX_LEASE_SECONDS", "0"),
        ]);
        assert!(matches!(
            GuardConfig::from_env(&env),
            Err(ConfigError::Invalid { name, .. }) if name == "IDEMPOTENCY_MAX_LEASE_SECONDS"
        ));
    }

    #[test]
    fn a_retention_shorter_than_the_longest_lease_is_rejected() {
        let env = Env::from_pairs([
            ("IDEMPOTENCY_TABLE", "t"),
            ("IDEMPOTENCY_RETENTION_SECONDS", "300"),
            ("IDEMPOTENCY_MAX_LEASE_SECONDS", "900"),
        ]);
        assert!(matches!(
            GuardConfig::from_env(&env),
            Err(ConfigError::Invalid { name, .. }) if name == "IDEMPOTENCY_RETENTION_SECONDS"
        ));
    }

    #[test]
    fn defaults_apply_when_optional_variables_are_unset() {
        let env = Env::from_pairs([("IDEMPOTENCY_TABLE", "jobs-idempotency")]);
        let config = GuardConfig::from_env(&env).unwrap();
        assert_eq!(config.table_name, "jobs-idempotency");
        assert_eq!(config.retention, Duration::from_secs(1_209_600));
        assert_eq!(config.lease_margin, Duration::from_secs(10));
        assert_eq!(config.max_lease, Duration::from_secs(910));
    }
}
