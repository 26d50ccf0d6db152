//! The local TLS endpoint of the cold-start benchmark: a private CA made at run time, and an
//! HTTPS listener on 127.0.0.1 per AWS service that forwards each request to the emulator over
//! plain HTTP and records when it accepted each TLS connection and how long its handshake took.
//!
//! The listener speaks HTTP itself rather than relaying bytes: the emulator closes its connection
//! after every response (`Connection: close`), and a byte relay would pass that close on, so the
//! functions could never reuse a connection as they do with AWS. Here each client connection
//! stays open as long as the client keeps it, and only the hop to the emulator is per request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hyper::body::Incoming;
use hyper::header::CONNECTION;
use hyper::service::service_fn;
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// A CA made for one benchmark run, and a server certificate it issued for `127.0.0.1` and
/// `localhost`.
#[derive(Clone)]
pub struct PrivateCa {
    /// The CA's certificate (PEM): what `AWS_CA_BUNDLE` names.
    pub certificate_pem: String,
    server: Arc<ServerConfig>,
}

impl PrivateCa {
    /// Makes the CA and the server certificate (ECDSA P-256, as rcgen makes by default).
    pub fn generate() -> anyhow::Result<Self> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, "queue-bench private CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;

        let server_key = KeyPair::generate()?;
        let mut server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])?;
        server
            .distinguished_name
            .push(DnType::CommonName, "queue-bench endpoint");
        let certificate = server.signed_by(&server_key, &ca)?;

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        let config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![certificate.der().clone(), ca.der().clone()], key)?;
        Ok(Self {
            certificate_pem: ca.pem(),
            server: Arc::new(config),
        })
    }
}

/// An HTTPS listener in front of the emulator; stops when dropped.
pub struct TlsProxy {
    /// `https://127.0.0.1:PORT`, for an `AWS_ENDPOINT_URL_*` variable.
    pub endpoint: String,
    /// When each TLS connection was accepted, and how long its handshake took.
    accepted: Arc<Mutex<Vec<(Instant, Duration)>>>,
    task: JoinHandle<()>,
}

impl TlsProxy {
    /// Listens on an ephemeral port of 127.0.0.1 with `ca`'s server certificate and forwards
    /// every request to `upstream` (`http://host:port`).
    pub async fn start(ca: &PrivateCa, upstream: &str) -> anyhow::Result<Self> {
        let upstream: Uri = upstream
            .parse()
            .with_context(|| format!("upstream {upstream}"))?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address: SocketAddr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::clone(&ca.server));
        let client: Client<HttpConnector, Incoming> =
            Client::builder(TokioExecutor::new()).build_http();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let at = Instant::now();
                tcp.set_nodelay(true).ok();
                let (acceptor, client, upstream, log) = (
                    acceptor.clone(),
                    client.clone(),
                    upstream.clone(),
                    Arc::clone(&log),
                );
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    log.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((at, at.elapsed()));
                    let forward = service_fn(move |request| {
                        forward(client.clone(), upstream.clone(), request)
                    });
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), forward)
                        .await
                        .ok();
                });
            }
        });
        Ok(Self {
            endpoint: format!("https://{address}"),
            accepted,
            task,
        })
    }

    /// The handshakes of the TLS connections accepted from `from` until `to`: how long each
    /// took, from the TCP accept to the end of the handshake (both sides' work and the round
    /// trips).
    pub fn handshakes_between(&self, from: Instant, to: Instant) -> Vec<Duration> {
        self.accepted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(at, _)| from <= *at && *at < to)
            .map(|(_, took)| *took)
            .collect()
    }

    /// Forgets the connections accepted so far.
    pub fn clear(&self) {
        self.accepted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends `request` to `upstream` and answers its response, minus the emulator's
/// `Connection: close` (the client's connection stays open).
async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: Uri,
    mut request: Request<Incoming>,
) -> Result<hyper::Response<Incoming>, hyper_util::client::legacy::Error> {
    let mut parts = upstream.into_parts();
    parts.path_and_query = request.uri().path_and_query().cloned();
    *request.uri_mut() = Uri::from_parts(parts).expect("an absolute upstream and a request path");
    let mut response = client.request(request).await?;
    response.headers_mut().remove(CONNECTION);
    Ok(response)
}
