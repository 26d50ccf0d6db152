//! The SDK client `queue_worker::aws::https_client` builds trusts exactly its trust store: a server whose
//! certificate does not chain to Amazon Trust Services is refused before any request is sent,
//! and the same server is reached once `AWS_CA_BUNDLE` names its certificate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use queue_worker::Env;
use queue_worker::aws::{CA_BUNDLE_VARIABLE, https_client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A TLS server on 127.0.0.1 for `localhost`, with a self-signed certificate, answering every
/// request with an empty DynamoDB response. Returns its address, its certificate (PEM) and a
/// count of the requests it received.
async fn tls_server() -> (SocketAddr, String, Arc<AtomicUsize>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, counted) = (acceptor.clone(), Arc::clone(&counted));
            tokio::spawn(async move {
                // A client that does not trust the certificate ends the handshake here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let body = "{}";
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                tls.write_all(response.as_bytes()).await.ok();
                tls.shutdown().await.ok();
            });
        }
    });
    (address, certified.cert.pem(), requests)
}

/// A DynamoDB client on `https_client(env)`, pointed at `address` as `localhost`.
async fn client(env: &Env, address: SocketAddr) -> aws_sdk_dynamodb::Client {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client(env).unwrap())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(format!("https://localhost:{}", address.port()))
        .retry_config(RetryConfig::disabled())
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&sdk)
}

#[tokio::test]
async fn a_certificate_outside_amazon_trust_services_is_refused_before_any_request() {
    let (address, _, requests) = tls_server().await;

    let error = client(&Env::default(), address)
        .await
        .list_tables()
        .send()
        .await
        .expect_err("a self-signed certificate must not be trusted");

    assert!(
        matches!(error, SdkError::DispatchFailure(_)),
        "expected the connection to fail, got {}",
        DisplayErrorContext(&error)
    );
    let text = format!("{}", DisplayErrorContext(&error)).to_lowercase();
    assert!(
        text.contains("certificate"),
        "not a certificate error: {text}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn aws_ca_bundle_replaces_the_trusted_roots() {
    let (address, pem, requests) = tls_server().await;
    let bundle = std::env::temp_dir().join(format!("ca-bundle-{}.pem", uuid::Uuid::now_v7()));
    std::fs::write(&bundle, pem).unwrap();
    let env = Env::from_pairs([(CA_BUNDLE_VARIABLE, bundle.to_str().unwrap())]);

    let tables = client(&env, address).await.list_tables().send().await;
    std::fs::remove_file(&bundle).ok();

    let tables = tables.unwrap_or_else(|e| panic!("{}", DisplayErrorContext(&e)));
    assert!(tables.table_names().is_empty());
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}
