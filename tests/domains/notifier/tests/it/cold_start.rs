//! The notifier's cold-start workload (`notifier-driver cold-start`, `make bench`) against the
//! emulator: the real binary under a fake Runtime API, every AWS request and the partner call
//! over TLS.

use std::path::Path;

use local_runner::host::{self, Target};
use notifier_tests::cold_start::{FUNCTIONS, NotifierWorkload};
use queue_bench::cold_start::{Binary, measure};

#[tokio::test]
async fn a_cold_notifier_delivers_over_tls_and_keeps_its_connections_warm() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let binary = host::build(&workspace, Target::Bin(FUNCTIONS[0]), "dev", &[])
        .await
        .unwrap();
    let logs = std::env::temp_dir().join(harness::unique_name("cold-start"));
    let binaries = [Binary {
        function: FUNCTIONS[0].into(),
        build: "dev".into(),
        path: binary,
        export_traces: false,
    }];

    // Each run's check: both notifications DELIVERED, the partner acted once on each key.
    let results = measure(&binaries, &[], 2, "dev", &logs, NotifierWorkload::create)
        .await
        .unwrap();

    let notifier = &results.binaries[0];
    assert_eq!(notifier.runs, 2);
    let connections = |phase: &str, listener: &str| {
        let range = &notifier.handshakes[phase][listener];
        (range.min, range.max)
    };
    // One TLS connection to the partner and one to DynamoDB on the first batch, none on the
    // warm one: the clients built at init keep their connections.
    assert_eq!(connections("first", "downstream"), (1, 1));
    assert_eq!(connections("first", "dynamodb"), (1, 1));
    assert_eq!(connections("warm", "downstream"), (0, 0));
    assert_eq!(connections("warm", "dynamodb"), (0, 0));
    assert_eq!(connections("init", "downstream"), (0, 0));
    std::fs::remove_dir_all(&logs).ok();
}
