//! AWS SDK configuration.
//!
//! Load it once per execution environment ([`load_sdk_config`], in `main`, before the runtime
//! loop) and build the clients from it once: SDK clients hold connection pools and credential
//! caches that are expensive to rebuild per invocation.
//!
//! Every call carries connect, attempt and operation timeouts ([`SdkTimeouts`], sized for a
//! Lambda invocation), so a call that hangs fails well before the invocation's deadline.
//!
//! Endpoints are not configured here on purpose: the SDK reads `AWS_ENDPOINT_URL` and the
//! per-service `AWS_ENDPOINT_URL_SQS`, `AWS_ENDPOINT_URL_DYNAMODB` and `AWS_ENDPOINT_URL_S3`
//! itself, which is how local runs point the very same code at an emulator.
//!
//! TLS trusts the roots of Amazon Trust Services, the CA that issues the certificates of AWS
//! service endpoints, compiled into the binary ([`trust_store`]). The SDK's default is the
//! platform's store: on Linux that means reading and parsing about 300 certificate files at
//! every cold start, which took more time than the rest of the function's init together.
//! Set `AWS_CA_BUNDLE` to a PEM file to trust its certificates instead (a TLS-inspecting proxy,
//! an S3-compatible store with its own CA, a partition whose endpoints use another CA).

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::Env;
use crate::config::{ConfigError, SdkTimeouts};

/// The root certificates of Amazon Trust Services (Amazon Root CA 1 to 4 and Starfield
/// Services Root Certificate Authority - G2), PEM.
pub const AMAZON_TRUST_SERVICES_ROOTS: &[u8] = include_bytes!("aws/amazon-trust-services.pem");

/// The variable that names a PEM bundle to trust instead of [`AMAZON_TRUST_SERVICES_ROOTS`]; the
/// AWS CLI reads the same one.
pub const CA_BUNDLE_VARIABLE: &str = "AWS_CA_BUNDLE";

/// The certificates TLS connections to AWS trust: those in the file `AWS_CA_BUNDLE` names, else
/// [`AMAZON_TRUST_SERVICES_ROOTS`]. A bundle that cannot be read, or holds no usable
/// certificate, is a configuration error that names the variable.
pub fn trust_store(env: &Env) -> Result<TrustStore, ConfigError> {
    let Some(path) = env.get(CA_BUNDLE_VARIABLE) else {
        return Ok(TrustStore::empty().with_pem_certificate(AMAZON_TRUST_SERVICES_ROOTS));
    };
    let invalid = |reason: String| ConfigError::Invalid {
        name: CA_BUNDLE_VARIABLE.to_owned(),
        value: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| invalid(format!("cannot read it: {e}")))?;
    // The SDK parses the bundle only when it opens its first connection, and panics there on a
    // bad certificate: check it here, at init, where the error can say what to fix.
    let count = root_certificates(&pem).map_err(invalid)?;
    if count == 0 {
        return Err(invalid("it holds no PEM certificate".to_owned()));
    }
    Ok(TrustStore::empty().with_pem_certificate(pem))
}

/// Counts the certificates in a PEM bundle, checking that each is usable as a trust anchor.
fn root_certificates(pem: &[u8]) -> Result<usize, String> {
    let mut roots = rustls::RootCertStore::empty();
    for (index, cert) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let cert = cert.map_err(|e| format!("PEM section {} is malformed: {e}", index + 1))?;
        roots
            .add(cert)
            .map_err(|e| format!("certificate {} is not usable as a root: {e}", index + 1))?;
    }
    Ok(roots.len())
}

/// The SDK's HTTPS client (rustls with aws-lc, as the SDK's default) with [`trust_store`]'s roots.
///
/// Its TLS configuration is built at the first request and shared by every client built from
/// it. (The SDK's own client builds and drops one per client at construction, to load the
/// platform's certificates early: five at every cold start here, for nothing.)
pub fn https_client(env: &Env) -> Result<SharedHttpClient, ConfigError> {
    let context = TlsContext::builder()
        .with_trust_store(trust_store(env)?)
        .build()
        .expect("a TLS context with a trust store always builds");
    let client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https();
    Ok(SharedHttpClient::new(ConnectOnDemand(client)))
}

/// An HTTP client that builds its connector only when a request needs it.
#[derive(Debug)]
struct ConnectOnDemand(SharedHttpClient);

impl HttpClient for ConnectOnDemand {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    // `validate_base_client_config` keeps the default, which builds nothing.

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

/// The SDK's timeout configuration for `timeouts`: connect, operation attempt and operation.
pub fn timeout_config(timeouts: &SdkTimeouts) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(timeouts.connect)
        .operation_attempt_timeout(timeouts.attempt)
        .operation_timeout(timeouts.operation)
        .build()
}

/// Loads the shared SDK configuration (region, credentials, endpoints, retry policy) from the
/// standard sources, with the [`SdkSettings`] in `env`: [`SdkSettings::from_env`], then
/// [`SdkSettings::load`].
pub async fn load_sdk_config(env: &Env) -> Result<SdkConfig, ConfigError> {
    Ok(SdkSettings::from_env(env)?.load().await)
}

/// What of the SDK configuration comes from the function's environment, read with no I/O but
/// the reading of `AWS_CA_BUNDLE`'s file: the [`https_client`], the [`SdkTimeouts`] (the SDK
/// sets no operation or attempt timeout of its own: a call that hangs would wait out the
/// invocation), and the region and credentials when the environment holds them.
///
/// The SDK's default chains try the environment first. When it holds the answer, as it always
/// does in Lambda (`AWS_REGION`, and the execution role's keys in `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, set once per execution environment), that
/// answer is taken from `env` directly, which spares every cold start building the rest of each
/// chain (profile files, web identity with its STS client, the container and instance metadata
/// providers). Elsewhere the chains run as usual, in [`load`](Self::load).
pub struct SdkSettings {
    /// The timeouts of every call.
    pub timeouts: SdkTimeouts,
    /// `AWS_REGION`, else `AWS_DEFAULT_REGION`.
    pub region: Option<Region>,
    /// The [`OVERRIDE_VARIABLES`] set, with their values.
    pub overrides: Vec<(&'static str, String)>,
    credentials: Option<Credentials>,
    http_client: SharedHttpClient,
}

impl std::fmt::Debug for SdkSettings {
    // The credentials and the client are left out: a secret, and no setting.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdkSettings")
            .field("timeouts", &self.timeouts)
            .field("region", &self.region)
            .field("overrides", &self.overrides)
            .field("credentials_in_env", &self.credentials.is_some())
            .finish_non_exhaustive()
    }
}

impl SdkSettings {
    /// Reads the settings; a bad trust store or timeout is an error naming its variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let overrides = overrides(env);
        let http_client = https_client(env)?;
        let timeouts = SdkTimeouts::from_env(env)?;
        let region = env
            .get("AWS_REGION")
            .or_else(|| env.get("AWS_DEFAULT_REGION"))
            .map(|region| Region::new(region.to_owned()));
        let credentials = match (
            env.get("AWS_ACCESS_KEY_ID"),
            env.get("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(key), Some(secret)) => {
                let token = env.get("AWS_SESSION_TOKEN").map(str::to_owned);
                Some(Credentials::new(key, secret, token, None, "Environment"))
            }
            _ => None,
        };
        Ok(Self {
            timeouts,
            region,
            overrides,
            credentials,
            http_client,
        })
    }

    /// The SDK configuration: these settings, and the SDK's default chains for what they leave
    /// out (which may read profile files and ask the instance metadata service).
    pub async fn load(self) -> SdkConfig {
        if !self.overrides.is_empty() {
            // Whoever can set a function's environment can send its AWS traffic elsewhere: say
            // so once, at start-up, where an operator's log search finds it.
            tracing::warn!(
                variables = ?self.overrides,
                "AWS endpoints or trusted roots are overridden by the environment"
            );
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(self.http_client)
            .timeout_config(timeout_config(&self.timeouts));
        if let Some(region) = self.region {
            loader = loader.region(region);
        }
        if let Some(credentials) = self.credentials {
            loader = loader.credentials_provider(credentials);
        }
        loader.load().await
    }

    /// An SDK configuration of these settings alone, built without looking anywhere else: for
    /// the check-config mode ([`crate::check`]), which builds the clients and sends nothing.
    pub(crate) fn offline(self) -> SdkConfig {
        let mut config = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(self.http_client)
            .timeout_config(timeout_config(&self.timeouts))
            .region(self.region);
        if let Some(credentials) = self.credentials {
            config = config.credentials_provider(SharedCredentialsProvider::new(credentials));
        }
        config.build()
    }
}

/// The variables that redirect the SDK's traffic or change whom it trusts.
pub const OVERRIDE_VARIABLES: &[&str] = &[
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_SQS",
    CA_BUNDLE_VARIABLE,
];

/// The [`OVERRIDE_VARIABLES`] set (non-empty) in `env`, with their values.
pub fn overrides(env: &Env) -> Vec<(&'static str, String)> {
    OVERRIDE_VARIABLES
        .iter()
        .filter_map(|name| env.get(name).map(|value| (*name, value.to_owned())))
        .collect()
}

/// Whether an endpoint override (`AWS_ENDPOINT_URL` or `AWS_ENDPOINT_URL_S3`) is set: a local
/// emulator. S3 clients then need path-style addressing, because `bucket.127.0.0.1` does not
/// resolve.
pub fn endpoint_overridden() -> bool {
    ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_credential_types::provider::ProvideCredentials as _;

    use super::*;

    /// Writes `contents` to a fresh file and returns an environment whose `AWS_CA_BUNDLE` names
    /// it, with the path to remove afterwards.
    fn bundle(contents: &[u8]) -> (Env, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("ca-bundle-{}.pem", uuid::Uuid::now_v7()));
        std::fs::write(&path, contents).unwrap();
        let env = Env::from_pairs([(CA_BUNDLE_VARIABLE, path.to_str().unwrap())]);
        (env, path)
    }

    fn reason(result: Result<TrustStore, ConfigError>) -> String {
        match result {
            Err(ConfigError::Invalid { name, reason, .. }) => {
                assert_eq!(name, CA_BUNDLE_VARIABLE);
                reason
            }
            other => panic!("expected an invalid {CA_BUNDLE_VARIABLE}, got {other:?}"),
        }
    }

    #[test]
    fn every_endpoint_or_trust_override_is_named_for_the_start_up_warning() {
        assert!(overrides(&Env::from_pairs([("AWS_REGION", "eu-west-3")])).is_empty());
        let env = Env::from_pairs([
            ("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:4566"),
            ("AWS_ENDPOINT_URL", ""),
            (CA_BUNDLE_VARIABLE, "/tmp/roots.pem"),
        ]);
        assert_eq!(
            overrides(&env),
            [
                ("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:4566".to_owned()),
                (CA_BUNDLE_VARIABLE, "/tmp/roots.pem".to_owned())
            ]
        );
    }

    #[tokio::test]
    async fn region_and_keys_in_the_environment_are_used_directly() {
        let env = Env::from_pairs([
            ("AWS_REGION", "eu-west-3"),
            ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "token"),
        ]);
        let sdk = load_sdk_config(&env).await.unwrap();
        assert_eq!(sdk.region().map(Region::as_ref), Some("eu-west-3"));
        let credentials = sdk
            .credentials_provider()
            .unwrap()
            .provide_credentials()
            .await
            .unwrap();
        assert_eq!(credentials.access_key_id(), "ASIAEXAMPLE");
        assert_eq!(credentials.secret_access_key(), "secret");
        assert_eq!(credentials.session_token(), Some("token"));
    }

    #[tokio::test]
    async fn the_loaded_config_carries_the_sdk_timeouts() {
        let sdk = load_sdk_config(&Env::default()).await.unwrap();
        let timeouts = sdk.timeout_config().expect("a timeout configuration");
        assert_eq!(timeouts.connect_timeout(), Some(Duration::from_secs(2)));
        assert_eq!(
            timeouts.operation_attempt_timeout(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(timeouts.operation_timeout(), Some(Duration::from_secs(15)));

        let env = Env::from_pairs([("SDK_OPERATION_TIMEOUT_MS", "9000")]);
        let sdk = load_sdk_config(&env).await.unwrap();
        let timeouts = sdk.timeout_config().unwrap();
        assert_eq!(timeouts.operation_timeout(), Some(Duration::from_secs(9)));

        let bad = Env::from_pairs([("SDK_ATTEMPT_TIMEOUT_MS", "soon")]);
        assert!(matches!(
            load_sdk_config(&bad).await,
            Err(ConfigError::Invalid { name, .. }) if name == "SDK_ATTEMPT_TIMEOUT_MS"
        ));
    }

    #[tokio::test]
    async fn aws_default_region_is_the_fallback() {
        let env = Env::from_pairs([("AWS_DEFAULT_REGION", "ap-south-1")]);
        let sdk = load_sdk_config(&env).await.unwrap();
        assert_eq!(sdk.region().map(Region::as_ref), Some("ap-south-1"));
    }

    #[test]
    fn the_compiled_in_bundle_holds_the_five_amazon_trust_services_roots() {
        assert_eq!(root_certificates(AMAZON_TRUST_SERVICES_ROOTS), Ok(5));
        let text = std::str::from_utf8(AMAZON_TRUST_SERVICES_ROOTS).unwrap();
        for root in [
            "CN = Amazon Root CA 1",
            "CN = Amazon Root CA 2",
            "CN = Amazon Root CA 3",
            "CN = Amazon Root CA 4",
            "CN = Starfield Services Root Certificate Authority - G2",
        ] {
            assert!(text.contains(root), "{root} is missing");
        }
    }

    #[test]
    fn without_aws_ca_bundle_the_amazon_roots_are_trusted() {
        assert!(trust_store(&Env::default()).is_ok());
    }

    #[test]
    fn a_readable_bundle_of_valid_certificates_is_accepted() {
        let (env, path) = bundle(AMAZON_TRUST_SERVICES_ROOTS);
        let result = trust_store(&env);
        std::fs::remove_file(path).unwrap();
        assert!(result.is_ok(), "{result:?}");
    }

    #[test]
    fn a_missing_bundle_is_a_configuration_error() {
        let path = std::env::temp_dir().join(format!("absent-{}.pem", uuid::Uuid::now_v7()));
        let env = Env::from_pairs([(CA_BUNDLE_VARIABLE, path.to_str().unwrap())]);
        assert!(reason(trust_store(&env)).starts_with("cannot read it"));
    }

    #[test]
    fn a_bundle_without_certificates_is_a_configuration_error() {
        let (env, path) = bundle(b"not a certificate\n");
        let result = trust_store(&env);
        std::fs::remove_file(path).unwrap();
        assert_eq!(reason(result), "it holds no PEM certificate");
    }

    #[test]
    fn a_bundle_with_a_corrupt_certificate_names_it() {
        let text = std::str::from_utf8(AMAZON_TRUST_SERVICES_ROOTS).unwrap();
        // The second certificate's DER is cut short; its PEM armour stays intact.
        let second = text
            .match_indices("-----BEGIN CERTIFICATE-----\n")
            .nth(1)
            .unwrap()
            .0;
        let body = second + "-----BEGIN CERTIFICATE-----\n".len();
        let corrupt = format!("{}{}", &text[..body], &text[body + 64..]);
        let (env, path) = bundle(corrupt.as_bytes());
        let result = trust_store(&env);
        std::fs::remove_file(path).unwrap();
        let reason = reason(result);
        assert!(
            reason.contains("certificate 2") || reason.contains("section 2"),
            "{reason}"
        );
    }
}
