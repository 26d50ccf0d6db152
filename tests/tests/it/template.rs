//! `template.yaml` and the build profiles it uses keep the invariants the pipeline's correctness
//! depends on, and the checkers catch each one broken (on mutated copies of the real files).

use harness::profiles::{load_manifest, panic_violations};
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

#[test]
fn the_template_keeps_every_invariant() {
    assert_eq!(violations(&load()), Vec::<String>::new());
}

#[test]
fn a_visibility_timeout_below_six_processor_timeouts_is_caught() {
    let found = mutated(|t| t["Mappings"]["QueueVisibility"]["60"]["Seconds"] = yaml("359"));
    assert_caught(&found, "visibility timeout must be at least 6 x 60");
}

#[test]
fn a_processor_timeout_without_a_visibility_entry_is_caught() {
    let found = mutated(|t| {
        t["Parameters"]["ProcessorTimeoutSeconds"]["AllowedValues"] = yaml(r#"["30", "60", "45"]"#)
    });
    assert_caught(&found, "6 x 45");
    assert_caught(
        &found,
        "allowed value \"45\" has no entry in the QueueVisibility mapping",
    );
}

#[test]
fn a_mapping_keyed_by_a_number_parameter_is_caught() {
    let found = mutated(|t| t["Parameters"]["ProcessorTimeoutSeconds"]["Type"] = yaml("Number"));
    assert_caught(
        &found,
        "ProcessorTimeoutSeconds: keys the QueueVisibility mapping, so it must be Type: String",
    );
    let found = mutated(|t| {
        t["Parameters"]["ProcessorTimeoutSeconds"]["AllowedValues"] = yaml("[30, 60, 120]")
    });
    assert_caught(
        &found,
        "must be quoted (it keys the QueueVisibility mapping)",
    );
}

#[test]
fn a_max_receive_count_below_five_is_caught() {
    let found = mutated(|t| t["Parameters"]["MaxReceiveCount"]["MinValue"] = yaml("3"));
    assert_caught(&found, "maxReceiveCount must be at least 5");
    let found = mutated(|t| {
        t["Resources"]["JobQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"] = yaml("2")
    });
    assert_caught(&found, "maxReceiveCount");
}

fn sqs_event(template: &mut Value) -> &mut Value {
    &mut template["Resources"]["ProcessorFunction"]["Properties"]["Events"]["Jobs"]["Properties"]
}

#[test]
fn a_missing_or_misspelled_report_batch_item_failures_is_caught() {
    let found =
        mutated(|t| sqs_event(t)["FunctionResponseTypes"] = yaml("[ReportBatchItemFailure]"));
    assert_caught(&found, "ReportBatchItemFailures");
    let found = mutated(|t| {
        sqs_event(t)
            .as_mapping_mut()
            .unwrap()
            .remove("FunctionResponseTypes");
    });
    assert_caught(&found, "ReportBatchItemFailures");
}

#[test]
fn a_maximum_concurrency_outside_2_to_1000_is_caught() {
    let found = mutated(|t| t["Parameters"]["MaximumConcurrency"]["MinValue"] = yaml("1"));
    assert_caught(&found, "MaximumConcurrency must be within 2..1000");
    let found = mutated(|t| t["Parameters"]["MaximumConcurrency"]["MaxValue"] = yaml("5000"));
    assert_caught(&found, "MaximumConcurrency");
}

/// The properties of the processor's SQS event.
fn jobs(t: &mut Value) -> &mut Value {
    &mut t["Resources"]["ProcessorFunction"]["Properties"]["Events"]["Jobs"]["Properties"]
}

#[test]
fn a_mapping_without_event_count_metrics_is_caught() {
    let found = mutated(|t| {
        jobs(t).as_mapping_mut().unwrap().remove("MetricsConfig");
    });
    assert_caught(
        &found,
        "ProcessorFunction: the SQS event must set MetricsConfig",
    );
    let found = mutated(|t| jobs(t)["MetricsConfig"]["Metrics"] = yaml("[]"));
    assert_caught(&found, "MetricsConfig");
}

#[test]
fn provisioned_pollers_with_maximum_concurrency_are_caught() {
    // Both at once, unconditionally: Lambda refuses the mapping.
    let found = mutated(|t| {
        jobs(t)["ScalingConfig"] = yaml("MaximumConcurrency: 5");
    });
    assert_caught(
        &found,
        "ProvisionedPollerConfig and ScalingConfig must be set under one condition",
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
        t["Parameters"]["MaxBatchingWindowSeconds"]["AllowedValues"] = yaml("[0, 1, 5]");
        t["Parameters"]["BatchSize"]["MaxValue"] = yaml("20");
        t["Parameters"]["BatchConcurrency"]["MinValue"] = yaml("20");
        t["Parameters"]["BatchConcurrency"]["Default"] = yaml("20");
    });
    assert_caught(&found, "batching window");
}

#[test]
fn a_consumed_queue_without_a_redrive_policy_is_caught() {
    let found = mutated(|t| {
        t["Resources"]["JobQueue"]["Properties"]
            .as_mapping_mut()
            .unwrap()
            .remove("RedrivePolicy");
    });
    assert_caught(&found, "needs a RedrivePolicy");
}

#[test]
fn a_dead_letter_queue_keeping_less_than_14_days_is_caught() {
    let found = mutated(|t| {
        t["Resources"]["DeadLetterQueue"]["Properties"]["MessageRetentionPeriod"] = yaml("345600")
    });
    assert_caught(&found, "14 days");
}

#[test]
fn a_large_batch_on_a_fifo_queue_is_caught() {
    let found = mutated(|t| {
        t["Resources"]["JobQueue"]["Properties"]["FifoQueue"] = yaml("true");
        t["Parameters"]["BatchSize"]["Default"] = yaml("20");
    });
    assert_caught(&found, "FIFO");
}

fn role_statements<'a>(template: &'a mut Value, role: &str) -> &'a mut Vec<Value> {
    template["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
        .as_sequence_mut()
        .unwrap()
}

#[test]
fn a_data_plane_action_on_any_resource_is_caught() {
    let found = mutated(|t| {
        role_statements(t, "ProducerRole").push(yaml(
            "{Effect: Allow, Action: [dynamodb:Scan], Resource: '*'}",
        ));
    });
    assert_caught(&found, "dynamodb:Scan on *");
    let found = mutated(|t| {
        t["Resources"]["ProcessorFunction"]["Properties"]["Policies"] =
            yaml("[AmazonS3FullAccess]");
    });
    assert_caught(&found, "AmazonS3FullAccess");
    let found = mutated(|t| {
        t["Resources"]["ProcessorRole"]["Properties"]["ManagedPolicyArns"] =
            yaml("[arn:aws:iam::aws:policy/AmazonSQSFullAccess]");
    });
    assert_caught(&found, "AmazonSQSFullAccess");
}

#[test]
fn a_function_without_a_role_of_its_own_is_caught() {
    let found = mutated(|t| {
        t["Resources"]["ProcessorFunction"]["Properties"]
            .as_mapping_mut()
            .unwrap()
            .remove("Role");
    });
    assert_caught(&found, "ProcessorFunction: needs Role");
}

// ------------------------------------------------ after the SAM transform (what is deployed)

#[test]
fn after_the_sam_transform_no_role_has_a_managed_policy_or_a_grant_on_star_but_x_ray() {
    let transformed = transform(&load());
    assert_eq!(transformed_violations(&transformed), Vec::<String>::new());
    // The check sees the roles: all written out, each with X-Ray as its only grant on *.
    let resources = transformed["Resources"].as_mapping().unwrap();
    let mut roles: Vec<&str> = resources
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::IAM::Role"))
        .filter_map(|(name, _)| name.as_str())
        .collect();
    roles.sort_unstable();
    // Exactly the roles the functions name, none generated.
    let source = load();
    let mut named: Vec<&str> = functions(&source)
        .iter()
        .filter_map(|f| {
            local_runner::template::get_att(&source["Resources"][*f]["Properties"]["Role"])
        })
        .map(|(role, _)| role)
        .collect();
    named.sort_unstable();
    assert!(!named.is_empty());
    assert_eq!(roles, named, "{roles:?}");
}

/// Every function of `template`, by logical id.
fn functions(template: &Value) -> Vec<&str> {
    template["Resources"]
        .as_mapping()
        .into_iter()
        .flatten()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::Serverless::Function"))
        .filter_map(|(name, _)| name.as_str())
        .collect()
}

#[test]
fn the_roles_sam_generates_for_a_function_without_one_are_caught_after_the_transform() {
    // The template as it was before the roles were written out: SAM's generated roles.
    let mut template = load();
    let all: Vec<String> = functions(&template)
        .into_iter()
        .map(str::to_owned)
        .collect();
    for function in &all {
        template["Resources"][function.as_str()]["Properties"]
            .as_mapping_mut()
            .unwrap()
            .remove("Role");
    }
    let found = transformed_violations(&transform(&template));
    assert_caught(&found, "AWSLambdaSQSQueueExecutionRole attached");
    assert_caught(&found, "AWSLambdaBasicExecutionRole attached");
    assert_caught(&found, "AWSXrayWriteOnlyAccess attached");
}

#[test]
fn a_grant_on_star_or_x_ray_without_tracing_is_caught_after_the_transform() {
    let mut template = load();
    role_statements(&mut template, "ProcessorRole").push(yaml(
        "{Effect: Allow, Action: [logs:PutLogEvents], Resource: '*'}",
    ));
    template["Resources"]["ProducerFunction"]["Properties"]["Tracing"] = yaml("PassThrough");
    let found = transformed_violations(&transform(&template));
    assert_caught(&found, "ProcessorRole: grants logs:PutLogEvents on *");
    assert_caught(
        &found,
        "ProducerRole: grants xray:PutTraceSegments but no function with Tracing: Active uses it",
    );
}

#[test]
fn a_required_variable_the_template_omits_is_caught() {
    let found = mutated(|t| {
        t["Resources"]["ProcessorFunction"]["Properties"]["Environment"]["Variables"]
            .as_mapping_mut()
            .unwrap()
            .remove("ITEMS_TABLE");
    });
    assert_caught(
        &found,
        "cannot start with the template's environment: environment variable ITEMS_TABLE is required",
    );
}

#[test]
fn a_default_repeated_in_the_template_is_caught() {
    let found = mutated(|t| {
        t["Resources"]["ProcessorFunction"]["Properties"]["Environment"]["Variables"]["CIRCUIT_OPEN_SECONDS"] =
            yaml("30");
    });
    assert_caught(&found, "sets CIRCUIT_OPEN_SECONDS to the code's default");
}

#[test]
fn a_deliberate_override_and_the_librarys_own_variables_are_allowed() {
    let found = mutated(|t| {
        let variables =
            &mut t["Resources"]["ProcessorFunction"]["Properties"]["Environment"]["Variables"];
        variables["CIRCUIT_OPEN_SECONDS"] = yaml("60");
        // A bundle that exists where the check runs: the function's start reads it.
        variables["AWS_CA_BUNDLE"] = Value::String(CA_BUNDLE.into());
        variables["RUST_LOG"] = yaml("info,aws_smithy_runtime=debug");
    });
    assert_eq!(found, Vec::<String>::new());
}

/// A PEM bundle of valid roots in the repository.
const CA_BUNDLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/queue-worker/src/aws/amazon-trust-services.pem"
);

#[test]
fn a_default_of_the_librarys_own_variables_repeated_in_the_template_is_caught() {
    let found = mutated(|t| {
        t["Resources"]["NotifierFunction"]["Properties"]["Environment"]["Variables"]["SDK_CONNECT_TIMEOUT_MS"] =
            yaml("2000");
    });
    assert_caught(
        &found,
        "NotifierFunction: the template sets SDK_CONNECT_TIMEOUT_MS to the code's default",
    );
}

#[test]
fn a_ca_bundle_the_function_cannot_read_is_caught() {
    let found = mutated(|t| {
        t["Resources"]["NotifierFunction"]["Properties"]["Environment"]["Variables"]["AWS_CA_BUNDLE"] =
            yaml("/nonexistent/ca.pem");
    });
    assert_caught(
        &found,
        "NotifierFunction: the code cannot start with the template's environment: environment \
         variable AWS_CA_BUNDLE=\"/nonexistent/ca.pem\" is invalid: cannot read it",
    );
}

#[test]
fn a_value_the_code_rejects_is_caught() {
    let found = mutated(|t| {
        t["Parameters"]["ItemWritesInFlight"]["Default"] = yaml("0");
    });
    assert_caught(&found, "ITEM_WRITES_IN_FLIGHT");
}

#[test]
fn an_environment_variable_the_template_sets_but_the_code_ignores_is_caught() {
    let found = mutated(|t| {
        t["Resources"]["ProducerFunction"]["Properties"]["Environment"]["Variables"]["JOB_QUEUE"] =
            yaml("typo");
    });
    assert_caught(&found, "sets JOB_QUEUE but the code never reads it");
}

fn manifest_with(change: impl FnOnce(&mut toml::Table)) -> Vec<String> {
    let mut manifest = load_manifest();
    change(&mut manifest);
    panic_violations(&manifest, &load())
}

fn profile<'a>(manifest: &'a mut toml::Table, name: &str) -> &'a mut toml::Table {
    manifest
        .entry("profile")
        .or_insert_with(|| toml::Table::new().into())
        .as_table_mut()
        .unwrap()
        .entry(name)
        .or_insert_with(|| toml::Table::new().into())
        .as_table_mut()
        .unwrap()
}

#[test]
fn every_profile_the_functions_are_built_with_unwinds_on_panic() {
    assert_eq!(
        panic_violations(&load_manifest(), &load()),
        Vec::<String>::new()
    );
}

#[test]
fn a_release_profile_leaving_panic_to_cargo_lambda_is_caught() {
    let found = manifest_with(|m| {
        profile(m, "release").remove("panic");
    });
    assert_caught(
        &found,
        "[profile.release] must set panic = \"unwind\" explicitly",
    );
}

#[test]
fn a_release_profile_that_aborts_on_panic_is_caught() {
    let found = manifest_with(|m| {
        profile(m, "release").insert("panic".into(), "abort".into());
    });
    assert_caught(
        &found,
        "ProcessorFunction: profile release builds with panic = \"abort\"",
    );
}

#[test]
fn a_debug_build_profile_that_aborts_on_panic_is_caught() {
    let found = manifest_with(|m| {
        profile(m, "dev").insert("panic".into(), "abort".into());
    });
    assert_caught(
        &found,
        "debug sam build: profile dev builds with panic = \"abort\"",
    );
}

#[test]
fn a_function_built_with_another_profile_is_checked_through_its_inheritance() {
    let mut template = load();
    template["Resources"]["ProcessorFunction"]["Metadata"]["BuildProperties"]["Flags"] =
        yaml("[--profile, lambda]");
    let mut manifest = load_manifest();
    let lambda = profile(&mut manifest, "lambda");
    lambda.insert("inherits".into(), "small".into());
    let small = profile(&mut manifest, "small");
    small.insert("inherits".into(), "release".into());
    small.insert("panic".into(), "abort".into());
    assert_caught(
        &panic_violations(&manifest, &template),
        "ProcessorFunction: profile lambda builds with panic = \"abort\"",
    );

    profile(&mut manifest, "small").remove("panic");
    assert_eq!(panic_violations(&manifest, &template), Vec::<String>::new());

    template["Resources"]["ProcessorFunction"]["Metadata"]["BuildProperties"]["Flags"] =
        yaml("[--profile=missing]");
    assert_caught(
        &panic_violations(&manifest, &template),
        "ProcessorFunction: profile missing is not defined in Cargo.toml",
    );
}

// ------------------------------------------------ closed queues

fn queue_policy_statements<'a>(template: &'a mut Value, policy: &str) -> &'a mut Vec<Value> {
    template["Resources"][policy]["Properties"]["PolicyDocument"]["Statement"]
        .as_sequence_mut()
        .unwrap()
}

#[test]
fn a_queue_without_a_queue_policy_is_caught() {
    let found = mutated(|t| {
        t["Resources"]
            .as_mapping_mut()
            .unwrap()
            .remove("DeadLetterQueuePolicy");
    });
    assert_caught(
        &found,
        "DeadLetterQueue: no AWS::SQS::QueuePolicy closes it",
    );
}

#[test]
fn a_queue_policy_without_the_tls_deny_is_caught() {
    let found = mutated(|t| {
        queue_policy_statements(t, "JobQueuePolicy").retain(|s| s["Sid"] != "DenyInsecureTransport")
    });
    assert_caught(
        &found,
        "JobQueue: its queue policy must deny sqs:* when aws:SecureTransport is false",
    );
}

#[test]
fn a_queue_policy_that_locks_out_a_sender_or_lets_another_in_is_caught() {
    fn exemptions(statements: &mut [Value]) -> &mut Vec<Value> {
        statements
            .iter_mut()
            .find(|s| s["Sid"] == "OnlySendersSend")
            .unwrap()["Condition"]["ArnNotLike"]["aws:PrincipalArn"]
            .as_sequence_mut()
            .unwrap()
    }
    // The DLQ's policy without the worker: it could not park poison jobs.
    let found =
        mutated(|t| exemptions(queue_policy_statements(t, "DeadLetterQueuePolicy")).clear());
    assert_caught(
        &found,
        "DeadLetterQueue: ProcessorRole is granted sqs:SendMessage on it but its queue policy denies it",
    );
    // The producer let into the DLQ, which it has no reason to send to.
    let found = mutated(|t| {
        exemptions(queue_policy_statements(t, "DeadLetterQueuePolicy"))
            .push(yaml("!GetAtt ProducerRole.Arn"))
    });
    assert_caught(
        &found,
        "DeadLetterQueue: its queue policy lets ProducerRole send, which no grant needs",
    );
    // Anyone.
    let found =
        mutated(|t| exemptions(queue_policy_statements(t, "JobQueuePolicy")).push(yaml("'*'")));
    assert_caught(&found, "JobQueue: its queue policy lets * send");
    // No send deny at all.
    let found = mutated(|t| {
        queue_policy_statements(t, "JobQueuePolicy").retain(|s| s["Sid"] != "OnlySendersSend")
    });
    assert_caught(
        &found,
        "JobQueue: its queue policy must deny sqs:SendMessage to all but its senders",
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
    assert_caught(
        &found,
        "HttpApi: POST /imports needs a ThrottlingRateLimit below the default route settings'",
    );
    let found =
        mutated(|t| t["Parameters"]["ImportsThrottlingBurstLimit"]["Default"] = yaml("100"));
    assert_caught(&found, "POST /imports needs a ThrottlingBurstLimit");
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

fn with_key(change: impl FnOnce(&mut Value)) -> Vec<String> {
    mutated(|t| {
        t["Parameters"]["KmsKeyArn"]["Default"] = Value::from(KEY);
        change(t);
    })
}

#[test]
fn with_a_kms_key_every_queue_table_bucket_and_log_group_uses_it() {
    assert_eq!(with_key(|_| {}), Vec::<String>::new());
    // What the check reads: each kind of resource, resolved with the key set.
    let mut template = load();
    template["Parameters"]["KmsKeyArn"]["Default"] = Value::from(KEY);
    let resolve = |resource: &str, path: &[&str]| {
        let mut value = harness::template::resolve_defaults(
            &template,
            &template["Resources"][resource]["Properties"],
        );
        for key in path {
            value = value[*key].clone();
        }
        value
    };
    assert_eq!(resolve("JobQueue", &["KmsMasterKeyId"]), KEY);
    assert_eq!(
        resolve("ItemsTable", &["SSESpecification", "KMSMasterKeyId"]),
        KEY
    );
    assert_eq!(resolve("ProcessorLogs", &["KmsKeyId"]), KEY);
}

#[test]
fn a_resource_left_out_of_the_kms_key_is_caught() {
    let found = with_key(|t| {
        t["Resources"]["ApiAccessLogs"]["Properties"]
            .as_mapping_mut()
            .unwrap()
            .remove("KmsKeyId");
        t["Resources"]["DeadLetterQueue"]["Properties"]["KmsMasterKeyId"] = yaml("alias/aws/sqs");
        t["Resources"]["IdempotencyTable"]["Properties"]["SSESpecification"] =
            yaml("{SSEEnabled: true}");
        t["Resources"]["UploadBucket"]["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            [0]["ServerSideEncryptionByDefault"] = yaml("{SSEAlgorithm: AES256}");
        t["Resources"]["ProducerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
            .as_sequence_mut()
            .unwrap()
            .retain(|s| intrinsic(s, "If").is_none());
    });
    for resource in [
        "ApiAccessLogs",
        "DeadLetterQueue",
        "IdempotencyTable",
        "UploadBucket",
        "ProducerRole",
    ] {
        assert_caught(
            &found,
            &format!("{resource}: with KmsKeyArn {KEY} it needs"),
        );
    }
}

#[test]
fn without_a_kms_key_the_defaults_stay() {
    let found = mutated(|t| {
        t["Resources"]["ItemsTable"]["Properties"]["SSESpecification"] =
            yaml("{SSEEnabled: true, SSEType: KMS, KMSMasterKeyId: alias/mine}");
    });
    assert_caught(
        &found,
        "ItemsTable: without KmsKeyArn it needs SSESpecification.SSEEnabled: true",
    );
}

// ------------------------------------------------ bucket and tables

#[test]
fn a_bucket_accepting_old_tls_or_keeping_incomplete_uploads_is_caught() {
    let found = mutated(|t| {
        t["Resources"]["UploadBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
            .as_sequence_mut()
            .unwrap()
            .retain(|s| s["Sid"] != "DenyTlsBelow12");
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
        "UploadBucket: needs a lifecycle rule aborting incomplete multipart uploads",
    );
}

#[test]
fn a_table_of_records_the_stack_may_drop_is_caught() {
    let found = mutated(|t| {
        let table = t["Resources"]["ItemsTable"].as_mapping_mut().unwrap();
        table.remove("DeletionPolicy");
        table.remove("UpdateReplacePolicy");
    });
    assert_caught(
        &found,
        "ItemsTable: a table of records needs DeletionPolicy: Retain",
    );
    assert_caught(
        &found,
        "ItemsTable: a table of records needs UpdateReplacePolicy: Retain",
    );
    let found = mutated(|t| t["Parameters"]["DeletionProtection"]["Default"] = yaml("'false'"));
    assert_caught(
        &found,
        "ImportsTable: a table of records needs DeletionProtectionEnabled",
    );
    // The idempotency table's claims expire: it may go with the stack.
    assert!(
        !found.iter().any(|v| v.contains("IdempotencyTable")),
        "{found:?}"
    );
}
