use queue_worker::config::{ConfigError, Env};
use queue_worker::protection::DependencySettings;
use reqwest::Url;

/// The notifier's own settings, read once at init (the settings every worker shares are
/// `queue_worker::lambda::WorkerSettings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifierConfig {
    /// Where notifications are POSTed (`PARTNER_URL`): `https`, or `http` on a loopback host
    /// (a local fake of the partner).
    pub partner_url: Url,
    /// The notifications table (`NOTIFICATIONS_TABLE`).
    pub notifications_table: String,
    /// Protection of the partner: timeout, retries, circuit breaker
    /// ([`DependencySettings`]: `DOWNSTREAM_*`, `CIRCUIT_*`).
    pub partner_protection: DependencySettings,
}

impl NotifierConfig {
    /// Reads the settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            partner_url: partner_url(&env.required("PARTNER_URL")?)?,
            notifications_table: env.required("NOTIFICATIONS_TABLE")?,
            partner_protection: DependencySettings::from_env(env)?,
        })
    }
}

fn partner_url(text: &str) -> Result<Url, ConfigError> {
    // The value is never echoed whole: a webhook's URL may carry a token in its path or query.
    let invalid = |reason: &str| ConfigError::Invalid {
        name: "PARTNER_URL".into(),
        value: redacted(text),
        reason: reason.into(),
    };
    let url = Url::parse(text).map_err(|e| invalid(&e.to_string()))?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(invalid(
            "must be an https URL (http only on a loopback host)",
        )),
    }
}

/// `text` with only its scheme and host, for error messages.
pub(crate) fn redacted(text: &str) -> String {
    match Url::parse(text) {
        Ok(url) => format!("{}://{}/...", url.scheme(), url.host_str().unwrap_or("?")),
        Err(_) => "(not a URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(url: &str) -> Env {
        Env::from_pairs([
            ("PARTNER_URL", url),
            ("NOTIFICATIONS_TABLE", "notifications"),
        ])
    }

    #[test]
    fn an_https_partner_and_a_local_http_one_are_accepted() {
        let config =
            NotifierConfig::from_env(&env("https://partner.example/notifications")).unwrap();
        assert_eq!(
            config.partner_url.as_str(),
            "https://partner.example/notifications"
        );
        assert_eq!(config.notifications_table, "notifications");
        assert!(NotifierConfig::from_env(&env("http://127.0.0.1:8080/hook")).is_ok());
    }

    #[test]
    fn a_plain_http_partner_or_a_missing_table_is_named() {
        assert!(matches!(
            NotifierConfig::from_env(&env("http://partner.example/notifications")),
            Err(ConfigError::Invalid { name, .. }) if name == "PARTNER_URL"
        ));
        assert!(matches!(
            NotifierConfig::from_env(&Env::from_pairs([("PARTNER_URL", "https://p.example")])),
            Err(ConfigError::Missing { name }) if name == "NOTIFICATIONS_TABLE"
        ));
    }

    #[test]
    fn a_rejected_url_is_never_echoed_with_its_path_or_query() {
        let error = NotifierConfig::from_env(&env("http://partner.example/hooks/s3cr3t?token=k3y"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("partner.example"), "{error}");
        assert!(
            !error.contains("s3cr3t") && !error.contains("k3y"),
            "{error}"
        );
    }
}
