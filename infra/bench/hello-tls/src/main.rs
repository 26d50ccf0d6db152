//! Hello world on `lambda_runtime` that makes one HTTPS request per invocation: the baseline
//! of the TLS cold-start benchmark in `make bench`.
//!
//! `HELLO_URL` is the URL each invocation GETs; `AWS_CA_BUNDLE` names the PEM file of the CAs
//! it trusts (the benchmark's private CA). One client is built at init and kept, so the first
//! invocation opens the connection (and pays the process's first TLS handshake) and later
//! invocations reuse it, as the functions' SDK clients do.

use std::sync::Arc;

use http_body_util::{BodyExt as _, Empty};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use rustls::crypto::aws_lc_rs;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde_json::{Value, json};

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<&'static [u8]>>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url: http::Uri = std::env::var("HELLO_URL")?.parse()?;
    let client = https_client(&std::env::var("AWS_CA_BUNDLE")?)?;
    run(service_fn(|_: LambdaEvent<Value>| get(&client, &url))).await
}

/// An HTTPS client (HTTP/1.1, kept-alive connections) trusting the certificates in `bundle`.
fn https_client(bundle: &str) -> Result<HttpsClient, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(bundle)? {
        roots.add(certificate?)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// GETs `url` and answers its status and body length.
async fn get(client: &HttpsClient, url: &http::Uri) -> Result<Value, Error> {
    let response = client.get(url.clone()).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(json!({ "status": status, "bytes": body.len() }))
}
