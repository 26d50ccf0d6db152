//! The invariants of `template.yaml` that only the import example's resources show: its HTTP API
//! (access log, write routes throttled tighter than reads), its upload bucket, its producer (a
//! function without an SQS event), and the processor's parameters and visibility mapping. The
//! checkers are the generic ones (`harness::template`); the tests that hold for every worker of
//! any template are in `tests/tests/it/template.rs`. Needs no AWS endpoint.

use harness::template::{load, transform, transformed_violations, violations};
use local_runner::template::intrinsic;
use serde_yaml_ng::Value;

fn mutated(change: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut template = load();
    change(&mut template);
    violations(&template)
}

fn assert_caught(found: &[String], expected: &str) {
    assert!(
        found.iter().any(|v| v.contains(expected)),
        "expected a violation mentioning {expected:?}, got {found:?}"
    );
}

fn yaml(text: &str) -> Value {
    serde_yaml_ng::from_str(text).unwrap()
}

fn parameter(template: &mut Value, name: &str, key: &str, value: &str) {
    let parameter = &mut template["Parameters"][name];
    assert!(
        parameter.is_mapping(),
        "the template has no parameter {name}"
    );
    parameter[key] = yaml(value);
}

/// The properties of the processor's SQS event.
fn jobs(t: &mut Value) -> &mut Value {
    &mut t["Resources"]["ProcessorFunction"]["Properties"]["Events"]["Jobs"]["Properties"]
}

fn variables<'a>(t: &'a mut Value, function: &str) -> &'a mut Value {
    &mut t["Resources"][function]["Properties"]["Environment"]["Variables"]
}

// ------------------------------------------------ the processor's parameters and mapping

#[test]
fn a_visibility_timeout_below_six_processor_timeouts_is_caught() {
    let found = mutated(|t| t["Mappings"]["QueueVisibility"]["60"]["Seconds"] = yaml("359"));
    assert_caught(
        &found,
        "JobQueue: visibility timeout must be at least 6 x 60",
    );
}

#[test]
fn a_processor_timeout_without_a_visibility_entry_is_caught() {
    let found = mutated(|t| {
        parameter(
            t,
            "ProcessorTimeoutSeconds",
            "AllowedValues",
            r#"["30", "60", "45"]"#,
        )
    });
    assert_caught(&found, "6 x 45");
    assert_caught(
        &found,
        "allowed value \"45\" has no entry in the QueueVisibility mapping",
    );
}

#[test]
fn a_mapping_keyed_by_a_number_parameter_is_caught() {
    let found = mutated(|t| parameter(t, "ProcessorTimeoutSeconds", "Type", "Number"));
    assert_caught(
        &found,
        "ProcessorTimeoutSeconds: keys the QueueVisibility mapping, so it must be Type: String",
    );
    let found = mutated(|t| {
        parameter(
            t,
            "ProcessorTimeoutSeconds",
            "AllowedValues",
            "[30, 60, 120]",
        )
    });
    assert_caught(
        &found,
        "must be quoted (it keys the QueueVisibility mapping)",
    );
}

#[test]
fn a_maximum_concurrency_parameter_allowing_less_than_2_or_more_than_1000_is_caught() {
    let found = mutated(|t| parameter(t, "MaximumConcurrency", "MinValue", "1"));
    assert_caught(
        &found,
        "ProcessorFunction: ScalingConfig.MaximumConcurrency must be within 2..1000",
    );
    let found = mutated(|t| parameter(t, "MaximumConcurrency", "MaxValue", "5000"));
    assert_caught(
        &found,
        "ProcessorFunction: ScalingConfig.MaximumConcurrency",
    );
}

#[test]
fn provisioned_pollers_with_maximum_concurrency_are_caught() {
    // Both at once, unconditionally: Lambda refuses the mapping.
    let found = mutated(|t| {
        jobs(t)["ScalingConfig"] = yaml("MaximumConcurrency: 5");
    });
    assert_caught(
        &found,
        "ProcessorFunction: ProvisionedPollerConfig and ScalingConfig must be set under one condition",
    );
    // Under two different conditions.
    let found = mutated(|t| {
        jobs(t)["ProvisionedPollerConfig"] =
            yaml("!If [UseKmsKey, {MinimumPollers: 1, MaximumPollers: 2}, !Ref AWS::NoValue]");
    });
    assert_caught(&found, "under one condition");
    // Provisioned mode only: no on-demand bound left.
    let found = mutated(|t| {
        jobs(t)["ScalingConfig"] = yaml("!Ref AWS::NoValue");
    });
    assert_caught(&found, "MaximumConcurrency must be within 2..1000");
}

#[test]
fn a_large_batch_without_a_batching_window_is_caught() {
    // A fork that allows batches over 10 records (and the batch concurrency to start them).
    let found = mutated(|t| {
        parameter(t, "MaxBatchingWindowSeconds", "AllowedValues", "[0, 1, 5]");
        parameter(t, "BatchSize", "MaxValue", "20");
        parameter(t, "BatchConcurrency", "MinValue", "20");
        parameter(t, "BatchConcurrency", "Default", "20");
    });
    assert_caught(
        &found,
        "ProcessorFunction: a batch size above 10 needs a batching window",
    );
}

fn not_all_started(template: &Value) -> Vec<String> {
    violations(template)
        .into_iter()
        .filter(|v| v.contains("does not all start"))
        .collect()
}

#[test]
fn a_batch_size_parameter_above_the_smallest_batch_concurrency_is_caught() {
    let found = mutated(|t| {
        parameter(t, "BatchSize", "MaxValue", "100");
        parameter(t, "BatchConcurrency", "MaxValue", "100");
    });
    let found: Vec<&String> = found
        .iter()
        .filter(|v| v.contains("does not all start"))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("ProcessorFunction:"), "{found:?}");

    let mut template = load();
    parameter(&mut template, "BatchConcurrency", "MinValue", "2");
    let found = not_all_started(&template);
    assert_eq!(found.len(), 1);
    assert!(found[0].contains("as low as 2"), "{found:?}");

    // Without BATCH_CONCURRENCY, the library's default (10) is the bound.
    let mut template = load();
    variables(&mut template, "ProcessorFunction")
        .as_mapping_mut()
        .unwrap()
        .remove("BATCH_CONCURRENCY");
    assert_eq!(not_all_started(&template), Vec::<String>::new());
    parameter(&mut template, "BatchSize", "MaxValue", "11");
    assert!(not_all_started(&template)[0].contains("as low as 10"));
}

// ------------------------------------------------ the functions' environments

#[test]
fn a_required_variable_the_template_omits_is_caught() {
    let found = mutated(|t| {
        variables(t, "ProcessorFunction")
            .as_mapping_mut()
            .unwrap()
            .remove("ITEMS_TABLE");
    });
    assert_caught(
        &found,
        "ProcessorFunction: the code cannot start with the template's environment: environment variable ITEMS_TABLE is required",
    );
}

#[test]
fn a_parameter_value_the_code_rejects_is_caught() {
    let found = mutated(|t| parameter(t, "ItemWritesInFlight", "Default", "0"));
    assert_caught(&found, "ITEM_WRITES_IN_FLIGHT");
}

#[test]
fn a_producer_variable_the_code_ignores_is_caught() {
    let found = mutated(|t| variables(t, "ProducerFunction")["JOB_QUEUE"] = yaml("typo"));
    assert_caught(
        &found,
        "ProducerFunction: the template sets JOB_QUEUE but the code never reads it",
    );
}

#[test]
fn x_ray_granted_to_the_producer_without_tracing_is_caught_after_the_transform() {
    let mut template = load();
    template["Resources"]["ProducerFunction"]["Properties"]["Tracing"] = yaml("PassThrough");
    let found = transformed_violations(&transform(&template));
    assert_caught(
        &found,
        "ProducerRole: grants xray:PutTraceSegments but no function with Tracing: Active uses it",
    );
}

// ------------------------------------------------ the job queue's senders

fn send_exemptions<'a>(template: &'a mut Value, policy: &str) -> &'a mut Vec<Value> {
    template["Resources"][policy]["Properties"]["PolicyDocument"]["Statement"]
        .as_sequence_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["Sid"] == "OnlySendersSend")
        .unwrap()["Condition"]["ArnNotLike"]["aws:PrincipalArn"]
        .as_sequence_mut()
        .unwrap()
}

#[test]
fn the_job_queue_lets_exactly_the_producer_and_the_processor_send() {
    // The producer queues jobs, the processor continues long imports.
    for role in ["ProducerRole", "ProcessorRole"] {
        let found = mutated(|t| {
            send_exemptions(t, "JobQueuePolicy")
                .retain(|e| local_runner::template::get_att(e).map(|(r, _)| r) != Some(role))
        });
        assert_caught(
            &found,
            &format!(
                "JobQueue: {role} is granted sqs:SendMessage on it but its queue policy denies it"
            ),
        );
    }
    // The producer has no reason to send to the DLQ.
    let found = mutated(|t| {
        send_exemptions(t, "DeadLetterQueuePolicy").push(yaml("!GetAtt ProducerRole.Arn"))
    });
    assert_caught(
        &found,
        "DeadLetterQueue: its queue policy lets ProducerRole send, which no grant needs",
    );
}

// ------------------------------------------------ the API

#[test]
fn an_access_log_without_the_caller_or_the_integrations_request_id_is_caught() {
    // The format as it was: the caller's access key id, no integration request id.
    let found = mutated(|t| {
        t["Resources"]["HttpApi"]["Properties"]["AccessLogSettings"]["Format"] =
            yaml(r#"'{"requestId":"$context.requestId","caller":"$context.identity.caller"}'"#)
    });
    assert_caught(
        &found,
        "HttpApi: the access log must record $context.integration.requestId",
    );
    assert_caught(
        &found,
        "HttpApi: the access log must record $context.identity.userArn",
    );
}

#[test]
fn a_write_route_not_throttled_tighter_than_reads_is_caught() {
    let found = mutated(|t| {
        t["Resources"]["HttpApi"]["Properties"]
            .as_mapping_mut()
            .unwrap()
            .remove("RouteSettings");
    });
    for route in ["POST /imports", "POST /uploads"] {
        assert_caught(
            &found,
            &format!(
                "HttpApi: {route} needs a ThrottlingRateLimit below the default route settings'"
            ),
        );
    }
    // Reads, and the catch-all route, get the stage's default.
    assert!(
        !found
            .iter()
            .any(|v| v.contains("GET /imports/{id}") || v.contains("ANY /{proxy+}")),
        "{found:?}"
    );
    let found = mutated(|t| parameter(t, "ImportsThrottlingBurstLimit", "Default", "100"));
    assert_caught(&found, "POST /imports needs a ThrottlingBurstLimit");
    // A new write route without settings of its own.
    let found = mutated(|t| {
        t["Resources"]["ProducerFunction"]["Properties"]["Events"]["Cancel"] = yaml(
            "{Type: HttpApi, Properties: {ApiId: !Ref HttpApi, Path: '/imports/{id}', Method: delete}}",
        )
    });
    assert_caught(
        &found,
        "HttpApi: DELETE /imports/{id} needs a ThrottlingRateLimit",
    );
}

#[test]
fn route_settings_for_a_route_the_api_does_not_have_are_caught() {
    let found = mutated(|t| {
        t["Resources"]["ProducerFunction"]["Properties"]["Events"]
            .as_mapping_mut()
            .unwrap()
            .remove("SubmitImport");
    });
    assert_caught(
        &found,
        "HttpApi: RouteSettings names POST /imports, which is no route of the API",
    );
}

// ------------------------------------------------ a customer-managed key

const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

#[test]
fn the_api_log_the_bucket_and_the_producer_are_left_out_of_the_kms_key_is_caught() {
    let found = mutated(|t| {
        t["Parameters"]["KmsKeyArn"]["Default"] = Value::from(KEY);
        t["Resources"]["ApiAccessLogs"]["Properties"]
            .as_mapping_mut()
            .unwrap()
            .remove("KmsKeyId");
        t["Resources"]["UploadBucket"]["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            [0]["ServerSideEncryptionByDefault"] = yaml("{SSEAlgorithm: AES256}");
        t["Resources"]["ProducerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
            .as_sequence_mut()
            .unwrap()
            .retain(|s| intrinsic(s, "If").is_none());
    });
    for resource in ["ApiAccessLogs", "UploadBucket", "ProducerRole"] {
        assert_caught(
            &found,
            &format!("{resource}: with KmsKeyArn {KEY} it needs"),
        );
    }
}

// ------------------------------------------------ the upload bucket

#[test]
fn a_bucket_accepting_old_tls_or_keeping_incomplete_uploads_is_caught() {
    let found = mutated(|t| {
        t["Resources"]["UploadBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
            .as_sequence_mut()
            .unwrap()
            .retain(|s| s["Sid"] != "DenyTlsBelow12" && s["Sid"] != "DenyInsecureTransport");
        t["Resources"]["UploadBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
            .as_sequence_mut()
            .unwrap()
            .retain(|r| r["Id"] != "AbortIncompleteUploads");
    });
    assert_caught(
        &found,
        "UploadBucket: its bucket policy must deny s3:* when s3:TlsVersion is below 1.2",
    );
    assert_caught(
        &found,
        "UploadBucket: its bucket policy must deny s3:* when aws:SecureTransport is false",
    );
    assert_caught(
        &found,
        "UploadBucket: needs a lifecycle rule aborting incomplete multipart uploads",
    );
}
