//! The import example's cold-start workload (`import-driver cold-start`, run by `make bench`):
//! - `import-producer`: `POST /imports` (API Gateway HTTP API), which records the import in
//!   DynamoDB and sends its job to SQS;
//! - `import-processor`: an SQS batch of one job whose import (a 10-row CSV) is read from S3
//!   and written to DynamoDB; the import must end `COMPLETED`.

use std::sync::Mutex;
use std::time::SystemTime;

use anyhow::{bail, ensure};
use imports::{
    DynamoDbImports, ImportFormat, ImportId, ImportJob, ImportRecord, ImportStatus, ImportStore,
    ObjectKey, Principal, import_attributes,
};
use queue_bench::cold_start::{
    Setup, Workload, api_gateway_post, batch_processed, create_table, sqs_event,
};
use queue_worker::idempotency::attributes;
use queue_worker::job::Job as _;
use serde_json::Value;

/// The caller of the producer's events (API Gateway's IAM authorizer names it).
const CALLER_ARN: &str = "arn:aws:iam::123456789012:user/bench";
const PRODUCER: &str = "import-producer";
const PROCESSOR: &str = "import-processor";
/// The functions it makes events for, by their binaries' names.
pub const FUNCTIONS: &[&str] = &[PRODUCER, PROCESSOR];

/// The object both functions work on: in the bench caller's own upload folder, where the
/// producer accepts it.
fn object_key() -> String {
    let caller = Principal::from_arn(CALLER_ARN).expect("the bench caller is an ARN");
    format!("uploads/{}/cold-start.csv", caller.upload_folder())
}

/// The tables, bucket and queues of both functions on the emulator, and the imports the
/// processor's events of the current run name.
pub struct ImportWorkload {
    imports: DynamoDbImports,
    settings: Vec<(String, String)>,
    object_key: ObjectKey,
    queue_arn: String,
    pending: Mutex<Vec<ImportId>>,
}

impl ImportWorkload {
    /// Creates uniquely named tables, bucket and queues and uploads the object (a header and
    /// 10 rows: one `BatchWriteItem`).
    pub async fn create(setup: Setup) -> anyhow::Result<Self> {
        let dynamodb = aws_sdk_dynamodb::Client::new(&setup.sdk);
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&setup.sdk)
                .force_path_style(true)
                .build(),
        );
        let sqs = aws_sdk_sqs::Client::new(&setup.sdk);
        let imports_table =
            create_table(&dynamodb, &setup.name("imports"), import_attributes::ID).await?;
        let items_table = create_table(&dynamodb, &setup.name("items"), "sku").await?;
        let guard_table =
            create_table(&dynamodb, &setup.name("idempotency"), attributes::KEY).await?;
        let bucket = setup.name("uploads");
        s3.create_bucket().bucket(&bucket).send().await?;
        let mut csv = String::from("sku,name,quantity,price\n");
        for row in 0..10 {
            csv.push_str(&format!("SKU-{row},Item {row},{row},{row}.50\n"));
        }
        s3.put_object()
            .bucket(&bucket)
            .key(object_key())
            .body(csv.into_bytes().into())
            .send()
            .await?;
        let mut queues = Vec::new();
        for queue in ["jobs", "dlq"] {
            let url = sqs
                .create_queue()
                .queue_name(setup.name(queue))
                .send()
                .await?
                .queue_url
                .ok_or_else(|| anyhow::anyhow!("a created queue has a URL"))?;
            queues.push(url);
        }
        let settings = [
            ("IMPORTS_TABLE", imports_table.clone()),
            ("ITEMS_TABLE", items_table),
            ("IDEMPOTENCY_TABLE", guard_table),
            ("UPLOAD_BUCKET", bucket),
            ("JOB_QUEUE_URL", queues[0].clone()),
            ("DEAD_LETTER_QUEUE_URL", queues[1].clone()),
        ];
        Ok(Self {
            imports: DynamoDbImports::new(dynamodb, imports_table),
            settings: settings
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            object_key: ObjectKey::from_stored(object_key()),
            queue_arn: format!("arn:aws:sqs:us-east-1:123456789012:{}", setup.name("jobs")),
            pending: Mutex::default(),
        })
    }
}

impl Workload for ImportWorkload {
    fn functions(&self) -> &[&'static str] {
        FUNCTIONS
    }

    fn targeted(&self) -> &[&'static str] {
        &[PROCESSOR]
    }

    fn settings(&self) -> Vec<(String, String)> {
        self.settings.clone()
    }

    async fn events(&self, function: &str) -> anyhow::Result<Vec<Value>> {
        let mut events = Vec::new();
        for _ in 0..2 {
            events.push(match function {
                PRODUCER => api_gateway_post(
                    "/imports",
                    &format!("{{\"objectKey\":\"{}\",\"format\":\"csv\"}}", object_key()),
                    CALLER_ARN,
                ),
                PROCESSOR => {
                    let id = ImportId::generate();
                    let record = ImportRecord::queued(
                        id,
                        self.object_key.clone(),
                        ImportFormat::Csv,
                        "cold-start".into(),
                        Principal::anonymous(),
                        SystemTime::now(),
                    );
                    self.imports.create(&record).await?;
                    self.pending.lock().expect("not poisoned").push(id);
                    let job = ImportJob::new(id, &self.object_key, ImportFormat::Csv);
                    sqs_event(&job.to_body(), &self.queue_arn)
                }
                other => bail!("no events for {other}"),
            });
        }
        Ok(events)
    }

    async fn check(&self, function: &str, responses: &[Value]) -> anyhow::Result<()> {
        for response in responses {
            let ok = match function {
                PRODUCER => response["statusCode"] == 202,
                _ => batch_processed(response),
            };
            ensure!(ok, "unexpected answer: {response}");
        }
        let pending = std::mem::take(&mut *self.pending.lock().expect("not poisoned"));
        for id in pending {
            let status = self.imports.get(id).await?.map(|r| r.status);
            ensure!(
                status == Some(ImportStatus::Completed),
                "import {id} ended {status:?}, not COMPLETED"
            );
        }
        Ok(())
    }
}
