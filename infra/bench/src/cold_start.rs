//! Cold start as users feel it: init, then the first invocation, then a second (warm) one, with
//! every AWS request over TLS.
//!
//! Each binary runs under the local runner's Runtime API ([`local_runner::runtime_api`]) with
//! the environment Lambda gives a function, pointed at the emulator through the HTTPS listeners of
//! [`crate::tls_proxy`] (one per service, so handshakes are counted per service) and trusting
//! their private CA through `AWS_CA_BUNDLE`. A run times, at the Runtime API:
//! - init: process start to the first `GET /invocation/next`;
//! - first: that poll to the answer of the first event (the first batch, or the first request);
//! - warm: the next poll to the answer of the second event, the same work on a warm process;
//!
//! and the cold penalty, first − warm of the same run. The events come from a [`Workload`]:
//! the domain's (its driver creates the resources its functions use and makes each function's
//! events: an SQS batch of one job, an API Gateway request, ..., then checks the work was
//! done), or this module's own `hello-world` baseline (any event; the function GETs a small
//! object over HTTPS).
//!
//! Runs are interleaved (each binary once per round), so drift on the machine spreads evenly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail, ensure};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_s3::types::ObjectCannedAcl;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::process::Command;

use local_runner::runtime_api::{Event, RuntimeApi};
use local_runner::traces::Collector;

use crate::init_time::{LAMBDA_ENVIRONMENT, percentile};
use crate::tls_proxy::{PrivateCa, TlsProxy};

mod command;

pub use command::{Args, parse_setting};

/// The object `hello-world` GETs.
const HELLO_KEY: &str = "hello.txt";
/// The services with a listener each, as named in `AWS_ENDPOINT_URL_<SERVICE>`.
const SERVICES: [&str; 3] = ["dynamodb", "s3", "sqs"];
/// Where handshakes are counted: each service's listener, then the workload's own downstreams'
/// ([`Workload::downstreams`]) together.
const LISTENERS: [&str; 4] = ["dynamodb", "s3", "sqs", "downstream"];
/// How long a function may take for its init or one invocation before the run fails.
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);

/// The ARN the Runtime API hands the functions with each event.
const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:bench";
/// The deadline of each event, from when it is queued: far enough that no work stops early.
const EVENT_DEADLINE: Duration = Duration::from_secs(900);

/// What the function did next at the Runtime API, within [`PHASE_TIMEOUT`]; a reported error
/// fails the run.
async fn next_event(api: &mut RuntimeApi) -> anyhow::Result<Event> {
    let event = tokio::time::timeout(PHASE_TIMEOUT, api.event())
        .await
        .with_context(|| format!("the function did nothing for {PHASE_TIMEOUT:?}"))?
        .context("the Runtime API stopped")?;
    match event {
        Event::Failed { request_id, error } => bail!("invocation {request_id} failed: {error}"),
        Event::InitFailed(error) => bail!("init failed: {error}"),
        event => Ok(event),
    }
}

/// When the function next asked for an event.
async fn next_poll(api: &mut RuntimeApi) -> anyhow::Result<Instant> {
    match next_event(api).await? {
        Event::Polled(at) => Ok(at),
        other => bail!("expected a poll for the next event, got {other:?}"),
    }
}

/// When the function answered the event it was handed, and the answer.
async fn response(api: &mut RuntimeApi) -> anyhow::Result<(Instant, Value)> {
    match next_event(api).await? {
        Event::Responded { at, body, .. } => Ok((at, body)),
        other => bail!("expected a response, got {other:?}"),
    }
}

/// The baseline's name: a function that GETs one object, timed beside the workload's.
pub const HELLO_WORLD: &str = "hello-world";

/// What a domain brings to the benchmark: the resources its functions use, each function's
/// events, and the check that they did their work.
pub trait Workload {
    /// The functions it makes events for (their names on the command line).
    fn functions(&self) -> &[&'static str];

    /// The functions whose cold penalty of the shipped build has the report's target.
    fn targeted(&self) -> &[&'static str];

    /// The functions' settings (tables, queues, bucket, ...), on top of Lambda's variables and
    /// the endpoints and trust store the benchmark sets.
    fn settings(&self) -> Vec<(String, String)>;

    /// The two events of one run of `function`, made ready (records written, objects uploaded).
    fn events(&self, function: &str) -> impl Future<Output = anyhow::Result<Vec<Value>>>;

    /// The HTTPS listeners of its own downstreams ([`Setup::https_front`]), whose handshakes
    /// are counted as `downstream`.
    fn downstreams(&self) -> Vec<&TlsProxy> {
        Vec::new()
    }

    /// Fails unless both events of the run of `function` that ended with `responses` did their
    /// work.
    fn check(
        &self,
        function: &str,
        responses: &[Value],
    ) -> impl Future<Output = anyhow::Result<()>>;
}

/// What a workload gets to create its resources with: the emulator's SDK configuration (plain
/// HTTP, from this process's environment), a fresh suffix for unique names, and the private CA
/// the functions' endpoints are served with, for a downstream of its own over TLS.
pub struct Setup {
    pub sdk: aws_config::SdkConfig,
    pub suffix: String,
    /// The private CA's certificate (PEM), the file `AWS_CA_BUNDLE` names.
    pub ca_bundle: PathBuf,
    ca: PrivateCa,
}

impl Setup {
    /// A unique name for a resource: `cold-start-<what>-<suffix>`.
    pub fn name(&self, what: &str) -> String {
        format!("cold-start-{what}-{}", self.suffix)
    }

    /// An HTTPS listener on 127.0.0.1 with the private CA's certificate in front of a
    /// plain-HTTP `upstream` (`http://127.0.0.1:PORT`): a workload's own downstream (a partner
    /// API) reached over TLS, as in production. Keep it as long as the workload.
    pub async fn https_front(&self, upstream: &str) -> anyhow::Result<TlsProxy> {
        TlsProxy::start(&self.ca, upstream).await
    }

    /// A trust bundle for a client that reads the platform's roots (`SSL_CERT_FILE`): the
    /// platform's own bundle, the first found where OpenSSL looks, with the private CA added,
    /// so the client parses as many certificates at its first handshake as it does in
    /// production. Written next to [`ca_bundle`](Self::ca_bundle).
    pub fn platform_roots_and_ca(&self) -> anyhow::Result<PathBuf> {
        const PLATFORM_BUNDLES: [&str; 3] = [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
            "/etc/ssl/cert.pem",
        ];
        let mut pem = PLATFORM_BUNDLES
            .iter()
            .find_map(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default();
        if !pem.is_empty() && !pem.ends_with('\n') {
            pem.push('\n');
        }
        pem.push_str(&self.ca.certificate_pem);
        let path = self
            .ca_bundle
            .with_file_name("cold-start-platform-roots-and-ca.pem");
        std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// The package of the `hello-world` baseline the cold start times (one HTTPS GET).
pub const HELLO_PACKAGE: &str = "hello-tls-lambda";

/// The binaries of one build in `dir` (a `cargo lambda build --lambda-dir`): the baseline's
/// and each of `functions`, at `dir/<name>/bootstrap`.
pub fn binaries_in(build: &str, dir: &Path, functions: &[&str]) -> Vec<Binary> {
    std::iter::once((HELLO_WORLD, HELLO_PACKAGE))
        .chain(functions.iter().map(|f| (*f, *f)))
        .map(|(function, package)| Binary {
            function: function.to_owned(),
            build: build.to_owned(),
            path: dir.join(package).join("bootstrap"),
            export_traces: false,
        })
        .collect()
}

/// The build name of [`exporting`]'s copies of build `build`.
pub fn exporting_build(build: &str) -> String {
    format!("{build}+trace-export")
}

/// The functions of build `build` among `binaries` (not the baseline, which has no spans)
/// again, as build `<build>+trace-export`:
/// run with their spans exported (`OTEL_EXPORTER_OTLP_ENDPOINT`) to a collector on 127.0.0.1
/// that [`measure`] starts, so each invocation's flush is in its time.
pub fn exporting(binaries: &[Binary], build: &str) -> Vec<Binary> {
    binaries
        .iter()
        .filter(|binary| {
            binary.build == build && !binary.export_traces && binary.function != HELLO_WORLD
        })
        .map(|binary| Binary {
            build: exporting_build(build),
            export_traces: true,
            ..binary.clone()
        })
        .collect()
}

/// A binary to time: `function@build=path` on the command line.
#[derive(Debug, Clone)]
pub struct Binary {
    pub function: String,
    /// Which build of it (e.g. `no-jitter`, `jitter`).
    pub build: String,
    pub path: PathBuf,
    /// Whether its spans are exported to the benchmark's collector ([`exporting`]).
    pub export_traces: bool,
}

/// Parses `function@build=path` (`@build` optional).
pub fn parse_binary(value: &str) -> Result<Binary, String> {
    let (name, path) = value
        .split_once('=')
        .ok_or_else(|| format!("expected function@build=path, got {value:?}"))?;
    let (function, build) = name.split_once('@').unwrap_or((name, "default"));
    Ok(Binary {
        function: function.to_owned(),
        build: build.to_owned(),
        path: PathBuf::from(path),
        export_traces: false,
    })
}

/// Median and 90th percentile of a series, milliseconds.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub median_ms: f64,
    pub p90_ms: f64,
}

impl Summary {
    fn of(samples: &[f64]) -> Self {
        if samples.is_empty() {
            return Self {
                median_ms: f64::NAN,
                p90_ms: f64::NAN,
            };
        }
        Self {
            median_ms: percentile(samples, 0.5),
            p90_ms: percentile(samples, 0.9),
        }
    }
}

/// The fewest and most TLS connections one run opened to a service in a phase.
#[derive(Debug, Serialize)]
pub struct Handshakes {
    pub min: usize,
    pub max: usize,
}

/// One binary's results.
#[derive(Debug, Serialize)]
pub struct ColdStart {
    pub function: String,
    /// Whether the report's cold-penalty target applies (for the shipped build).
    pub targeted: bool,
    pub build: String,
    pub runs: usize,
    pub init: Summary,
    pub first: Summary,
    pub warm: Summary,
    /// first − warm of each run.
    pub penalty: Summary,
    /// Phase (`init`, `first`, `warm`) → listener (`dynamodb`, `s3`, `sqs`, `downstream`) →
    /// TLS connections accepted.
    pub handshakes: BTreeMap<&'static str, BTreeMap<&'static str, Handshakes>>,
    /// How long one handshake took, accept to done, over every run's handshakes.
    pub handshake: Summary,
    /// Every run, in order.
    pub samples: Vec<Sample>,
}

/// The whole measurement.
#[derive(Debug, Serialize)]
pub struct Results {
    pub runs: usize,
    /// The build the targets apply to (the one that ships).
    pub shipped_build: String,
    pub binaries: Vec<ColdStart>,
}

/// One run's timings (ms) and TLS connections per phase (init, first, warm) and listener
/// (DynamoDB, S3, SQS, the workload's downstreams).
#[derive(Debug, Serialize)]
pub struct Sample {
    init: f64,
    first: f64,
    warm: f64,
    handshakes: [[usize; LISTENERS.len()]; 3],
    /// Each handshake's duration, ms.
    handshake_ms: Vec<f64>,
}

const PHASES: [&str; 3] = ["init", "first", "warm"];

/// Times each of `binaries` `runs` times, interleaved, with `settings` on top of Lambda's
/// variables; logs of the last run of each go to `logs`. `workload` makes the events of every
/// function but [`HELLO_WORLD`], from the resources it creates.
pub async fn measure<W, F>(
    binaries: &[Binary],
    settings: &[(String, String)],
    runs: usize,
    shipped_build: &str,
    logs: &Path,
    workload: impl FnOnce(Setup) -> F,
) -> anyhow::Result<Results>
where
    W: Workload,
    F: Future<Output = anyhow::Result<W>>,
{
    let mut proxies = Vec::new();
    let ca = PrivateCa::generate()?;
    for service in SERVICES {
        // A service's own endpoint first, as the SDK reads them (LocalStack in host mode
        // serves DynamoDB from the emulator).
        let upstream = std::env::var(format!("AWS_ENDPOINT_URL_{}", service.to_uppercase()))
            .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
            .context(
                "AWS_ENDPOINT_URL must name the emulator: eval \"$(infra/emulator/emulator.sh env)\"",
            )?;
        ensure!(
            upstream.starts_with("http://127.0.0.1") || upstream.starts_with("http://localhost"),
            "the cold-start benchmark only runs against a local emulator, not {upstream}"
        );
        proxies.push(TlsProxy::start(&ca, &upstream).await?);
    }
    std::fs::create_dir_all(logs)?;
    let bundle = logs.join("cold-start-ca.pem");
    std::fs::write(&bundle, &ca.certificate_pem)?;
    let sdk = aws_config::load_from_env().await;
    let suffix = uuid::Uuid::now_v7().simple().to_string()[20..].to_owned();
    let hello = hello_world(&sdk, &format!("cold-start-hello-{suffix}"), &proxies).await?;
    let workload = workload(Setup {
        sdk,
        suffix,
        ca_bundle: bundle.clone(),
        ca: ca.clone(),
    })
    .await?;
    for binary in binaries {
        ensure!(
            binary.function == HELLO_WORLD
                || workload.functions().contains(&binary.function.as_str()),
            "no events for {}: the workload has {:?} and {HELLO_WORLD}",
            binary.function,
            workload.functions()
        );
    }
    let mut environment: Vec<(String, String)> = LAMBDA_ENVIRONMENT
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    environment.extend(settings.iter().cloned());
    environment.extend(workload.settings());
    environment.extend([
        (
            "AWS_ENDPOINT_URL_DYNAMODB".to_owned(),
            endpoint(&proxies, "dynamodb"),
        ),
        ("AWS_ENDPOINT_URL_S3".to_owned(), endpoint(&proxies, "s3")),
        ("AWS_ENDPOINT_URL_SQS".to_owned(), endpoint(&proxies, "sqs")),
        ("AWS_CA_BUNDLE".to_owned(), bundle.display().to_string()),
        ("HELLO_URL".to_owned(), hello),
    ]);

    // The exporting binaries' spans go to a collector of the benchmark's own (kept in `logs`).
    let collector = if binaries.iter().any(|binary| binary.export_traces) {
        Some(Collector::start(logs.join("cold-start-spans.jsonl")).await?)
    } else {
        None
    };
    let exporting_environment: Vec<(String, String)> = environment
        .iter()
        .cloned()
        .chain(collector.iter().flat_map(Collector::environment))
        .collect();

    let mut samples: Vec<Vec<Sample>> = binaries.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (binary, samples) in binaries.iter().zip(&mut samples) {
            let log = logs.join(format!(
                "cold-start-{}-{}.log",
                binary.function, binary.build
            ));
            let environment = if binary.export_traces {
                &exporting_environment
            } else {
                &environment
            };
            let sample = once(binary, environment, &workload, &proxies, &log)
                .await
                .with_context(|| {
                    format!(
                        "cold start of {}@{} ({}); its output is in {}",
                        binary.function,
                        binary.build,
                        binary.path.display(),
                        log.display()
                    )
                })?;
            samples.push(sample);
        }
    }

    let binaries = binaries
        .iter()
        .zip(samples)
        .map(|(binary, samples)| {
            let targeted = workload.targeted().contains(&binary.function.as_str());
            summarise(binary, targeted, samples)
        })
        .collect();
    Ok(Results {
        runs,
        shipped_build: shipped_build.to_owned(),
        binaries,
    })
}

fn summarise(binary: &Binary, targeted: bool, samples: Vec<Sample>) -> ColdStart {
    let series = |f: fn(&Sample) -> f64| samples.iter().map(f).collect::<Vec<_>>();
    let all_handshakes: Vec<f64> = samples
        .iter()
        .flat_map(|s| s.handshake_ms.iter().copied())
        .collect();
    let mut handshakes = BTreeMap::new();
    for (phase_index, phase) in PHASES.into_iter().enumerate() {
        let per_service = LISTENERS
            .into_iter()
            .enumerate()
            .map(|(service_index, service)| {
                let counts = samples
                    .iter()
                    .map(|s| s.handshakes[phase_index][service_index]);
                let range = Handshakes {
                    min: counts.clone().min().unwrap_or(0),
                    max: counts.max().unwrap_or(0),
                };
                (service, range)
            })
            .collect();
        handshakes.insert(phase, per_service);
    }
    ColdStart {
        function: binary.function.clone(),
        targeted,
        build: binary.build.clone(),
        runs: samples.len(),
        init: Summary::of(&series(|s| s.init)),
        first: Summary::of(&series(|s| s.first)),
        warm: Summary::of(&series(|s| s.warm)),
        penalty: Summary::of(&series(|s| s.first - s.warm)),
        handshakes,
        handshake: Summary::of(&all_handshakes),
        samples,
    }
}

/// One run: start the binary, hand it two events, time each phase, stop it.
async fn once(
    binary: &Binary,
    environment: &[(String, String)],
    workload: &impl Workload,
    proxies: &[TlsProxy],
    log: &Path,
) -> anyhow::Result<Sample> {
    let hello = binary.function == HELLO_WORLD;
    let events = if hello {
        vec![json!({}), json!({})]
    } else {
        workload.events(&binary.function).await?
    };
    let mut api = RuntimeApi::start(FUNCTION_ARN).await?;
    for event in events {
        api.invoke(event, SystemTime::now() + EVENT_DEADLINE);
    }
    let downstreams = workload.downstreams();
    let listeners: Vec<(usize, &TlsProxy)> = proxies
        .iter()
        .enumerate()
        .chain(downstreams.into_iter().map(|p| (SERVICES.len(), p)))
        .collect();
    for (_, proxy) in &listeners {
        proxy.clear();
    }
    let output = std::fs::File::create(log)?;
    let started = Instant::now();
    let mut child = Command::new(&binary.path)
        .env_clear()
        .envs(environment.iter().map(|(k, v)| (k, v)))
        .env("AWS_LAMBDA_RUNTIME_API", api.address())
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output)
        .kill_on_drop(true)
        .spawn()?;
    let phases = async {
        let first_poll = next_poll(&mut api).await?;
        let (first_answer, first) = response(&mut api).await?;
        let second_poll = next_poll(&mut api).await?;
        let (second_answer, warm) = response(&mut api).await?;
        let third_poll = next_poll(&mut api).await?;
        anyhow::Ok((
            [started, first_poll, second_poll, third_poll],
            [first_answer, second_answer],
            [first, warm],
        ))
    }
    .await;
    child.kill().await.ok();
    let (polls, answers, responses) = phases?;
    if hello {
        for response in &responses {
            ensure!(response["status"] == 200, "unexpected answer: {response}");
        }
    } else {
        workload.check(&binary.function, &responses).await?;
    }

    let mut handshakes = [[0; LISTENERS.len()]; 3];
    let mut handshake_ms = Vec::new();
    for (phase, window) in polls.windows(2).enumerate() {
        for (listener, proxy) in &listeners {
            let durations = proxy.handshakes_between(window[0], window[1]);
            handshakes[phase][*listener] += durations.len();
            handshake_ms.extend(durations.iter().map(|d| d.as_secs_f64() * 1000.0));
        }
    }
    let ms = |from: Instant, to: Instant| to.duration_since(from).as_secs_f64() * 1000.0;
    Ok(Sample {
        init: ms(polls[0], polls[1]),
        first: ms(polls[1], answers[0]),
        warm: ms(polls[2], answers[1]),
        handshakes,
        handshake_ms,
    })
}

/// The HTTPS endpoint of `service`'s listener.
fn endpoint(proxies: &[TlsProxy], service: &str) -> String {
    let index = SERVICES
        .iter()
        .position(|s| *s == service)
        .expect("a known service");
    proxies[index].endpoint.clone()
}

/// Creates the bucket `hello-world` GETs from, with its public object, and returns the URL
/// (through the S3 listener) the function gets as `HELLO_URL`.
async fn hello_world(
    sdk: &aws_config::SdkConfig,
    bucket: &str,
    proxies: &[TlsProxy],
) -> anyhow::Result<String> {
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket().bucket(bucket).send().await?;
    // Public: hello-world GETs it without signing.
    s3.put_object()
        .bucket(bucket)
        .key(HELLO_KEY)
        .acl(ObjectCannedAcl::PublicRead)
        .body(b"hello\n".to_vec().into())
        .send()
        .await?;
    Ok(format!("{}/{bucket}/{HELLO_KEY}", endpoint(proxies, "s3")))
}

/// Creates an on-demand table `name` with the string partition key `key`.
pub async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
    key: &str,
) -> anyhow::Result<String> {
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(KeyType::Hash)
                .build()?,
        )
        .send()
        .await
        .with_context(|| format!("creating table {name}"))?;
    Ok(name.to_owned())
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// An SQS event of one message with `body`, as the event source mapping delivers it.
pub fn sqs_event(body: &str, queue_arn: &str) -> Value {
    let sent = now_ms().to_string();
    json!({"Records": [{
        "messageId": uuid::Uuid::now_v7().to_string(),
        "receiptHandle": "cold-start",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": sent,
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": sent
        },
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": "us-east-1"
    }]})
}

/// Whether `response`, a function's answer to an [`sqs_event`], reports every record processed
/// (an empty `batchItemFailures`).
pub fn batch_processed(response: &Value) -> bool {
    response["batchItemFailures"]
        .as_array()
        .is_some_and(Vec::is_empty)
}

/// A `POST` of `body` to `path` with a fresh idempotency key, as an API Gateway HTTP API
/// (payload 2.0, IAM authorizer) delivers it, the caller being `caller_arn`.
pub fn api_gateway_post(path: &str, body: &str, caller_arn: &str) -> Value {
    let key = uuid::Uuid::now_v7().to_string();
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "content-type": "application/json",
            "content-length": body.len().to_string(),
            "host": "bench.execute-api.us-east-1.amazonaws.com",
            "idempotency-key": key
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "bench",
            "authorizer": {"iam": {
                "accessKey": "ASIAEXAMPLEKEY",
                "accountId": "123456789012",
                "callerId": "AIDAEXAMPLECALLER",
                "principalOrgId": null,
                "userArn": caller_arn,
                "userId": "AIDAEXAMPLECALLER"
            }},
            "domainName": "bench.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "bench",
            "http": {
                "method": "POST",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.10",
                "userAgent": "queue-bench"
            },
            "requestId": key,
            "routeKey": "$default",
            "stage": "$default",
            "time": "01/Dec/2026:00:00:00 +0000",
            "timeEpoch": now_ms()
        },
        "body": body,
        "isBase64Encoded": false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exporting_copies_the_functions_of_one_build_but_not_the_baseline() {
        let mut binaries = binaries_in("shipped", Path::new("/s"), &["processor"]);
        binaries.extend(binaries_in("jitter", Path::new("/j"), &["processor"]));

        let copies = exporting(&binaries, "shipped");

        let described: Vec<_> = copies
            .iter()
            .map(|b| {
                (
                    b.function.as_str(),
                    b.build.as_str(),
                    b.path.clone(),
                    b.export_traces,
                )
            })
            .collect();
        assert_eq!(
            described,
            [(
                "processor",
                "shipped+trace-export",
                PathBuf::from("/s/processor/bootstrap"),
                true
            )]
        );
        assert!(binaries.iter().all(|b| !b.export_traces));
        assert!(exporting(&copies, "shipped+trace-export").is_empty());
    }
}
