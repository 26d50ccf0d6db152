//! The local runner provisions the emulator from `template.yaml`, with the template's settings.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use harness::{s3_client, sdk_config, unique_name};
use local_runner::provision::{Clients, mapping_settings, provision};
use local_runner::template::{Template, get_att, reference};

fn template() -> Template {
    Template::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../template.yaml"
    ))
    .unwrap()
}

async fn clients() -> Clients {
    let config = sdk_config().await;
    Clients {
        sqs: aws_sdk_sqs::Client::new(&config),
        dynamodb: aws_sdk_dynamodb::Client::new(&config),
        s3: s3_client(&config),
    }
}

#[tokio::test]
async fn queues_tables_and_bucket_get_the_template_settings_and_provisioning_is_idempotent() {
    let clients = clients().await;
    let template = template();
    let stack = unique_name("local");
    let first = provision(&template, &stack, &clients).await.unwrap();
    let again = provision(&template, &stack, &clients).await.unwrap();
    assert_eq!(first.reference("JobQueue"), again.reference("JobQueue"));

    let queue = first.reference("JobQueue").unwrap();
    assert!(queue.ends_with(&format!("{stack}-import-jobs")), "{queue}");
    let attributes = clients
        .sqs
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    // ProcessorTimeoutSeconds defaults to 60: 6 x 60 + 30.
    assert_eq!(attributes[&QueueAttributeName::VisibilityTimeout], "390");
    let redrive: serde_json::Value =
        serde_json::from_str(&attributes[&QueueAttributeName::RedrivePolicy]).unwrap();
    assert_eq!(
        redrive["deadLetterTargetArn"],
        first.arn("DeadLetterQueue").unwrap()
    );
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "10"
    );

    let ttl = clients
        .dynamodb
        .describe_time_to_live()
        .table_name(first.reference("IdempotencyTable").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description.unwrap().attribute_name(),
        Some("expires_at")
    );
    let items = clients
        .dynamodb
        .describe_table()
        .table_name(first.reference("ItemsTable").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(items.table.unwrap().key_schema()[0].attribute_name(), "sku");
    clients
        .s3
        .head_bucket()
        .bucket(first.reference("UploadBucket").unwrap())
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn function_environments_resolve_to_the_local_resources_and_start_the_code() {
    let clients = clients().await;
    let template = template();
    let provisioned = provision(&template, &unique_name("local"), &clients)
        .await
        .unwrap();
    for (function, binary) in [
        ("ProcessorFunction", "import-processor"),
        ("ProducerFunction", "import-producer"),
    ] {
        let env = provisioned.function_env(&template, function).unwrap();
        let names: BTreeSet<String> = env.iter().map(|(k, _)| k.clone()).collect();
        let read = harness::settings::variables_read_by(binary, &env).unwrap();
        assert!(names.is_subset(&read), "{names:?} not all read: {read:?}");

        // What each variable must be: a resource's name, URL or ARN as provisioned, as the
        // kind of reference dictates; a parameter's default; a literal.
        let mut resources = BTreeSet::new();
        let expected = harness::settings::function_env(template.root(), function, |value| {
            let (id, physical) = match (reference(value), get_att(value)) {
                (Some(id), _) => (id, provisioned.reference(id)),
                (None, Some((id, "Arn"))) => (id, provisioned.arn(id)),
                _ => return Err(format!("{value:?} is not a resource's name, URL or ARN")),
            };
            resources.insert(id.to_owned());
            physical
                .map(str::to_owned)
                .ok_or_else(|| format!("references {id}, which was not provisioned"))
        });
        assert!(!resources.is_empty(), "{function} names no resource");
        assert_eq!(env, expected, "{function} (resources {resources:?})");
    }
    let env = provisioned
        .function_env(&template, "ProcessorFunction")
        .unwrap();
    let config =
        import_processor::ProcessorConfig::from_env(&queue_worker::Env::from_pairs(env)).unwrap();
    assert_eq!(
        Some(config.worker.dead_letter_queue_url.as_str()),
        provisioned.reference("DeadLetterQueue")
    );
    assert_eq!(config.worker.batch.concurrency.get(), 10);
}

#[tokio::test]
async fn the_event_source_mapping_takes_the_template_settings() {
    let (queue, settings) = mapping_settings(&template(), "ProcessorFunction").unwrap();
    assert_eq!(queue, "JobQueue");
    assert_eq!(settings.batch_size, 10);
    assert_eq!(settings.batching_window, Duration::from_secs(1));
    assert_eq!(settings.maximum_concurrency, 5);
    assert_eq!(settings.function_timeout, Duration::from_secs(60));
    assert!(settings.report_batch_item_failures);
}

#[tokio::test]
async fn in_provisioned_mode_the_mapping_runs_up_to_ten_invocations_per_poller() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../template.yaml"
    ))
    .unwrap();
    let mut root: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    root["Parameters"]["EventPolling"]["Default"] = "provisioned".into();
    root["Parameters"]["MaximumPollers"]["Default"] = 3.into();
    let provisioned = Template::parse(&serde_yaml_ng::to_string(&root).unwrap()).unwrap();
    let (_, settings) = mapping_settings(&provisioned, "ProcessorFunction").unwrap();
    assert_eq!(settings.maximum_concurrency, 30);
    // Every other worker's mapping stays on demand, as the template without the switch has it
    // (whichever other workers the template has: none, once they are removed).
    let on_demand = template();
    for function in local_runner::host::sqs_triggered_functions(&provisioned) {
        if function == "ProcessorFunction" {
            continue;
        }
        let (_, provisioned) = mapping_settings(&provisioned, function).unwrap();
        let (_, expected) = mapping_settings(&on_demand, function).unwrap();
        assert_eq!(
            provisioned.maximum_concurrency, expected.maximum_concurrency,
            "{function}"
        );
    }
}
