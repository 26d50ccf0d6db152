//! `template.yaml` and the build profiles it uses keep the invariants the pipeline's correctness
//! depends on, and the checkers catch each one broken (on mutated copies of the real files).
//!
//! Generic: every test runs on the template as it is and on the template without each example
//! it marks (`harness::examples::variants`), and breaks whichever SQS-triggered functions,
//! queues, roles, tables and log groups that template has (`harness::template::workers`), so the
//! tests hold in a fork that removed an example. What only an example's resources show (the
//! import example's API, bucket and parameters) is tested with that example, in
//! `tests/domains/NAME/tests/it/template.rs`.

use harness::examples::variants;
use harness::profiles::{load_manifest, panic_violations};
use harness::template::{Worker, transform, transformed_violations, violations, workers};
use local_runner::template::{get_att, intrinsic, reference};
use serde_yaml_ng::Value;

fn assert_caught(found: &[String], expected: &str) {
    assert!(
        found.iter().any(|v| v.contains(expected)),
        "expected a violation mentioning {expected:?}, got {found:?}"
    );
}

fn yaml(text: &str) -> Value {
    serde_yaml_ng::from_str(text).unwrap()
}

/// Every SQS-triggered function of every template a fork can have, with that template.
fn every_worker() -> Vec<(String, Value, Worker)> {
    let all: Vec<_> = variants()
        .into_iter()
        .flat_map(|(label, template)| {
            workers(&template)
                .into_iter()
                .map(move |worker| (label.clone(), template.clone(), worker))
        })
        .collect();
    assert!(
        !all.is_empty(),
        "template.yaml has no SQS-triggered function"
    );
    all
}

/// For every worker of every template: the violations of the template after `change`, which
/// `check` asserts on (given the worker, and the template's label for messages).
fn each_worker_mutated(
    change: impl Fn(&mut Value, &Worker),
    check: impl Fn(&[String], &Worker, &str),
) {
    for (label, mut template, worker) in every_worker() {
        change(&mut template, &worker);
        check(&violations(&template), &worker, &label);
    }
}

fn resource<'a>(template: &'a mut Value, name: &str) -> &'a mut Value {
    let resource = &mut template["Resources"][name];
    assert!(resource.is_mapping(), "the template has no {name}");
    resource
}

fn properties<'a>(template: &'a mut Value, name: &str) -> &'a mut Value {
    &mut resource(template, name)["Properties"]
}

fn sqs_event<'a>(template: &'a mut Value, worker: &Worker) -> &'a mut Value {
    &mut properties(template, &worker.function)["Events"][worker.event.as_str()]["Properties"]
}

fn variables<'a>(template: &'a mut Value, worker: &Worker) -> &'a mut Value {
    &mut properties(template, &worker.function)["Environment"]["Variables"]
}

fn dead_letter_queue(worker: &Worker) -> &str {
    worker
        .dead_letter_queue
        .as_deref()
        .unwrap_or_else(|| panic!("{} reads a queue without a DLQ", worker.function))
}

fn role(worker: &Worker) -> &str {
    worker
        .role
        .as_deref()
        .unwrap_or_else(|| panic!("{} names no role", worker.function))
}

/// The `AWS::SQS::QueuePolicy` that lists `queue`.
fn queue_policy(template: &Value, queue: &str) -> String {
    template["Resources"]
        .as_mapping()
        .into_iter()
        .flatten()
        .find(|(_, r)| {
            r["Type"].as_str() == Some("AWS::SQS::QueuePolicy")
                && r["Properties"]["Queues"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .any(|q| reference(q) == Some(queue))
        })
        .and_then(|(name, _)| name.as_str())
        .unwrap_or_else(|| panic!("no queue policy lists {queue}"))
        .to_owned()
}

#[test]
fn the_template_keeps_every_invariant() {
    for (label, template) in variants() {
        assert_eq!(violations(&template), Vec::<String>::new(), "{label}");
    }
}

#[test]
fn a_visibility_timeout_below_six_function_timeouts_is_caught() {
    each_worker_mutated(
        |t, w| properties(t, &w.queue)["VisibilityTimeout"] = yaml("30"),
        |found, w, _| {
            assert_caught(
                found,
                &format!("{}: visibility timeout must be at least 6 x", w.queue),
            )
        },
    );
}

#[test]
fn a_max_receive_count_below_five_is_caught() {
    each_worker_mutated(
        |t, w| properties(t, &w.queue)["RedrivePolicy"]["maxReceiveCount"] = yaml("2"),
        |found, w, _| {
            assert_caught(
                found,
                &format!("{}: maxReceiveCount must be at least 5", w.queue),
            )
        },
    );
    // Given by a parameter: its lower bound counts.
    each_worker_mutated(
        |t, w| {
            let count = properties(t, &w.queue)["RedrivePolicy"]["maxReceiveCount"].clone();
            match reference(&count) {
                Some(parameter) => t["Parameters"][parameter]["MinValue"] = yaml("3"),
                None => {
                    t["Parameters"]["TestReceives"] =
                        yaml("{Type: Number, Default: 10, MinValue: 3}");
                    properties(t, &w.queue)["RedrivePolicy"]["maxReceiveCount"] =
                        yaml("!Ref TestReceives");
                }
            }
        },
        |found, w, _| {
            assert_caught(
                found,
                &format!("{}: maxReceiveCount must be at least 5", w.queue),
            )
        },
    );
}

#[test]
fn a_missing_or_misspelled_report_batch_item_failures_is_caught() {
    each_worker_mutated(
        |t, w| sqs_event(t, w)["FunctionResponseTypes"] = yaml("[ReportBatchItemFailure]"),
        |found, w, _| {
            assert_caught(
                found,
                &format!(
                    "{}: the SQS event must set FunctionResponseTypes",
                    w.function
                ),
            )
        },
    );
    each_worker_mutated(
        |t, w| {
            sqs_event(t, w)
                .as_mapping_mut()
                .unwrap()
                .remove("FunctionResponseTypes");
        },
        |found, w, _| {
            assert_caught(
                found,
                &format!(
                    "{}: the SQS event must set FunctionResponseTypes",
                    w.function
                ),
            )
        },
    );
}

#[test]
fn a_maximum_concurrency_outside_2_to_1000_is_caught() {
    for limit in ["1", "5000"] {
        each_worker_mutated(
            |t, w| {
                sqs_event(t, w)["ScalingConfig"] = yaml(&format!("{{MaximumConcurrency: {limit}}}"))
            },
            |found, w, _| {
                assert_caught(
                    found,
                    &format!(
                        "{}: ScalingConfig.MaximumConcurrency must be within 2..1000",
                        w.function
                    ),
                )
            },
        );
    }
    // No on-demand bound at all.
    each_worker_mutated(
        |t, w| {
            sqs_event(t, w)
                .as_mapping_mut()
                .unwrap()
                .remove("ScalingConfig");
        },
        |found, w, _| {
            assert_caught(
                found,
                &format!("{}: ScalingConfig.MaximumConcurrency", w.function),
            )
        },
    );
}

#[test]
fn a_mapping_without_event_count_metrics_is_caught() {
    each_worker_mutated(
        |t, w| {
            sqs_event(t, w)
                .as_mapping_mut()
                .unwrap()
                .remove("MetricsConfig");
        },
        |found, w, _| {
            assert_caught(
                found,
                &format!("{}: the SQS event must set MetricsConfig", w.function),
            )
        },
    );
    each_worker_mutated(
        |t, w| sqs_event(t, w)["MetricsConfig"]["Metrics"] = yaml("[]"),
        |found, w, _| {
            assert_caught(
                found,
                &format!("{}: the SQS event must set MetricsConfig", w.function),
            )
        },
    );
}

/// The `AWS::CloudWatch::Alarm` on the failed invokes of `worker`'s event source mapping.
fn mapping_alarm(template: &Value, worker: &Worker) -> String {
    let mapping = format!("{}{}", worker.function, worker.event);
    template["Resources"]
        .as_mapping()
        .into_iter()
        .flatten()
        .find(|(_, r)| {
            r["Properties"]["MetricName"].as_str() == Some("FailedInvokeEventCount")
                && r["Properties"]["Dimensions"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .any(|d| reference(&d["Value"]) == Some(mapping.as_str()))
        })
        .and_then(|(name, _)| name.as_str())
        .unwrap_or_else(|| panic!("no alarm on the failed invokes of {mapping}"))
        .to_owned()
}

#[test]
fn a_mapping_without_a_failed_invokes_alarm_is_caught() {
    each_worker_mutated(
        |t, w| {
            let alarm = mapping_alarm(t, w);
            t["Resources"].as_mapping_mut().unwrap().remove(&alarm);
        },
        |found, w, _| {
            assert_caught(
                found,
                &format!(
                    "{}{}: the event source mapping needs an alarm on FailedInvokeEventCount",
                    w.function, w.event
                ),
            )
        },
    );
}

#[test]
fn a_failed_invokes_alarm_a_default_deploy_leaves_out_is_caught() {
    // Skipped where the target cannot resolve the mapping (LocalStack), never by default.
    each_worker_mutated(
        |t, w| {
            t["Conditions"]["Never"] = yaml("!Equals [a, b]");
            let alarm = mapping_alarm(t, w);
            resource(t, &alarm)["Condition"] = yaml("Never");
        },
        |found, w, _| {
            assert_caught(
                found,
                &format!(
                    "{}{}: the event source mapping needs an alarm",
                    w.function, w.event
                ),
            );
            assert_caught(
                found,
                "its condition Never is false with the parameters' defaults",
            );
        },
    );
}

#[test]
fn a_failed_invokes_alarm_on_another_dimension_or_no_mapping_is_caught() {
    // By function name (the function's own metrics), or by a mapping no SQS event generates
    // (an alarm left behind by a removed worker).
    for (dimension, value) in [
        ("FunctionName", "!Ref {function}"),
        ("EventSourceMappingUUID", "!Ref {function}Removed"),
    ] {
        each_worker_mutated(
            |t, w| {
                let alarm = mapping_alarm(t, w);
                properties(t, &alarm)["Dimensions"] = yaml(&format!(
                    "[{{Name: {dimension}, Value: {}}}]",
                    value.replace("{function}", &w.function)
                ));
            },
            |found, w, _| {
                assert_caught(found, "an alarm on FailedInvokeEventCount must name");
                assert_caught(
                    found,
                    &format!("{}{}: the event source mapping needs", w.function, w.event),
                );
            },
        );
    }
}

#[test]
fn provisioned_pollers_together_with_maximum_concurrency_are_caught() {
    // Both at once, unconditionally: Lambda refuses the mapping.
    each_worker_mutated(
        |t, w| {
            let event = sqs_event(t, w);
            event["ScalingConfig"] = yaml("MaximumConcurrency: 5");
            event["ProvisionedPollerConfig"] = yaml("{MinimumPollers: 1, MaximumPollers: 2}");
        },
        |found, w, _| {
            assert_caught(
                found,
                &format!(
                    "{}: ProvisionedPollerConfig and ScalingConfig must be set under one condition",
                    w.function
                ),
            )
        },
    );
    // Under two different conditions.
    each_worker_mutated(
        |t, w| {
            let event = sqs_event(t, w);
            event["ScalingConfig"] =
                yaml("!If [OnDemand, !Ref AWS::NoValue, {MaximumConcurrency: 5}]");
            event["ProvisionedPollerConfig"] = yaml(
                "!If [Provisioned, {MinimumPollers: 1, MaximumPollers: 2}, !Ref AWS::NoValue]",
            );
        },
        |found, w, _| {
            assert_caught(
                found,
                &format!("{}: ProvisionedPollerConfig and ScalingConfig", w.function),
            )
        },
    );
}

#[test]
fn a_large_batch_without_a_batching_window_is_caught() {
    // A fork that allows batches over 10 records (and the batch concurrency to start them).
    each_worker_mutated(
        |t, w| {
            let event = sqs_event(t, w);
            event["BatchSize"] = yaml("20");
            event["MaximumBatchingWindowInSeconds"] = yaml("0");
            variables(t, w)["BATCH_CONCURRENCY"] = yaml("'20'");
        },
        |found, w, _| {
            assert_caught(
                found,
                &format!(
                    "{}: a batch size above 10 needs a batching window",
                    w.function
                ),
            )
        },
    );
}

#[test]
fn a_consumed_queue_without_a_redrive_policy_is_caught() {
    each_worker_mutated(
        |t, w| {
            properties(t, &w.queue)
                .as_mapping_mut()
                .unwrap()
                .remove("RedrivePolicy");
        },
        |found, w, _| {
            assert_caught(
                found,
                &format!(
                    "{}: a queue a function consumes needs a RedrivePolicy",
                    w.queue
                ),
            )
        },
    );
}

#[test]
fn a_dead_letter_queue_keeping_less_than_14_days_is_caught() {
    each_worker_mutated(
        |t, w| properties(t, dead_letter_queue(w))["MessageRetentionPeriod"] = yaml("345600"),
        |found, w, _| {
            assert_caught(
                found,
                &format!(
                    "{}: a dead-letter queue keeps messages for 14 days",
                    dead_letter_queue(w)
                ),
            )
        },
    );
}

#[test]
fn a_large_batch_on_a_fifo_queue_is_caught() {
    each_worker_mutated(
        |t, w| {
            properties(t, &w.queue)["FifoQueue"] = yaml("true");
            sqs_event(t, w)["BatchSize"] = yaml("20");
        },
        |found, w, _| {
            assert_caught(
                found,
                &format!(
                    "{}: a FIFO queue allows a batch size of at most 10",
                    w.queue
                ),
            )
        },
    );
}

fn role_statements<'a>(template: &'a mut Value, role: &str) -> &'a mut Vec<Value> {
    properties(template, role)["Policies"][0]["PolicyDocument"]["Statement"]
        .as_sequence_mut()
        .unwrap()
}

#[test]
fn a_data_plane_action_on_any_resource_is_caught() {
    each_worker_mutated(
        |t, w| {
            role_statements(t, role(w)).push(yaml(
                "{Effect: Allow, Action: [dynamodb:Scan], Resource: '*'}",
            ))
        },
        |found, w, _| {
            assert_caught(
                found,
                &format!(
                    "{}: grants the data-plane action dynamodb:Scan on *",
                    role(w)
                ),
            )
        },
    );
    each_worker_mutated(
        |t, w| properties(t, &w.function)["Policies"] = yaml("[AmazonS3FullAccess]"),
        |found, w, _| {
            assert_caught(
                found,
                &format!("{}: managed policy AmazonS3FullAccess", w.function),
            )
        },
    );
    each_worker_mutated(
        |t, w| {
            properties(t, role(w))["ManagedPolicyArns"] =
                yaml("[arn:aws:iam::aws:policy/AmazonSQSFullAccess]")
        },
        |found, w, _| {
            assert_caught(
                found,
                &format!(
                    "{}: managed policy arn:aws:iam::aws:policy/AmazonSQSFullAccess attached",
                    role(w)
                ),
            )
        },
    );
}

#[test]
fn a_function_without_a_role_of_its_own_is_caught() {
    each_worker_mutated(
        |t, w| {
            properties(t, &w.function)
                .as_mapping_mut()
                .unwrap()
                .remove("Role");
        },
        |found, w, _| assert_caught(found, &format!("{}: needs Role", w.function)),
    );
}

// ------------------------------------------------ after the SAM transform (what is deployed)

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
fn after_the_sam_transform_no_role_has_a_managed_policy_or_a_grant_on_star_but_x_ray() {
    for (label, source) in variants() {
        let transformed = transform(&source);
        assert_eq!(
            transformed_violations(&transformed),
            Vec::<String>::new(),
            "{label}"
        );
        // The check sees the roles: all written out, each with X-Ray as its only grant on *.
        let resources = transformed["Resources"].as_mapping().unwrap();
        let mut roles: Vec<&str> = resources
            .iter()
            .filter(|(_, r)| r["Type"].as_str() == Some("AWS::IAM::Role"))
            .filter_map(|(name, _)| name.as_str())
            .collect();
        roles.sort_unstable();
        // Exactly the roles the functions name, none generated.
        let mut named: Vec<&str> = functions(&source)
            .iter()
            .filter_map(|f| get_att(&source["Resources"][*f]["Properties"]["Role"]))
            .map(|(role, _)| role)
            .collect();
        named.sort_unstable();
        assert!(!named.is_empty(), "{label}");
        assert_eq!(roles, named, "{label}");
    }
}

#[test]
fn the_roles_sam_generates_for_a_function_without_one_are_caught_after_the_transform() {
    // The template as it was before the roles were written out: SAM's generated roles.
    for (label, mut template) in variants() {
        let all: Vec<String> = functions(&template)
            .into_iter()
            .map(str::to_owned)
            .collect();
        for function in &all {
            properties(&mut template, function)
                .as_mapping_mut()
                .unwrap()
                .remove("Role");
        }
        let found = transformed_violations(&transform(&template));
        for managed in [
            "AWSLambdaSQSQueueExecutionRole attached",
            "AWSLambdaBasicExecutionRole attached",
            "AWSXrayWriteOnlyAccess attached",
        ] {
            assert!(
                found.iter().any(|v| v.contains(managed)),
                "{label}: {managed} not in {found:?}"
            );
        }
    }
}

#[test]
fn a_grant_on_star_or_x_ray_without_tracing_is_caught_after_the_transform() {
    // One worker of the template as it is, and one of each template without an example.
    for (label, template) in variants() {
        let worker = workers(&template).into_iter().next().expect("a worker");
        let mut template = template;
        role_statements(&mut template, role(&worker)).push(yaml(
            "{Effect: Allow, Action: [logs:PutLogEvents], Resource: '*'}",
        ));
        properties(&mut template, &worker.function)["Tracing"] = yaml("PassThrough");
        let found = transformed_violations(&transform(&template));
        let role = role(&worker);
        assert!(
            found
                .iter()
                .any(|v| v.contains(&format!("{role}: grants logs:PutLogEvents on *"))),
            "{label}: {found:?}"
        );
        assert!(
            found.iter().any(|v| v.contains(&format!(
                "{role}: grants xray:PutTraceSegments but no function with Tracing: Active uses it"
            ))),
            "{label}: {found:?}"
        );
    }
}

// ------------------------------------------------ each function's environment

#[test]
fn an_environment_the_code_cannot_start_with_is_caught() {
    each_worker_mutated(
        |t, w| {
            if let Some(variables) = variables(t, w).as_mapping_mut() {
                variables.clear();
            }
        },
        |found, w, _| {
            assert_caught(
                found,
                &format!(
                    "{}: the code cannot start with the template's environment: environment variable",
                    w.function
                ),
            )
        },
    );
}

#[test]
fn a_default_repeated_in_the_template_is_caught() {
    each_worker_mutated(
        |t, w| variables(t, w)["CIRCUIT_OPEN_SECONDS"] = yaml("30"),
        |found, w, _| {
            assert_caught(
                found,
                &format!(
                    "{}: the template sets CIRCUIT_OPEN_SECONDS to the code's default",
                    w.function
                ),
            )
        },
    );
}

#[test]
fn a_deliberate_override_and_the_librarys_own_variables_are_allowed() {
    each_worker_mutated(
        |t, w| {
            let variables = variables(t, w);
            variables["CIRCUIT_OPEN_SECONDS"] = yaml("60");
            // A bundle that exists where the check runs: the function's start reads it.
            variables["AWS_CA_BUNDLE"] = Value::String(CA_BUNDLE.into());
            variables["RUST_LOG"] = yaml("info,aws_smithy_runtime=debug");
        },
        |found, _, label| assert_eq!(found, Vec::<String>::new(), "{label}"),
    );
}

/// A PEM bundle of valid roots in the repository.
const CA_BUNDLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/queue-worker/src/aws/amazon-trust-services.pem"
);

#[test]
fn a_default_of_the_librarys_own_variables_repeated_in_the_template_is_caught() {
    each_worker_mutated(
        |t, w| variables(t, w)["SDK_CONNECT_TIMEOUT_MS"] = yaml("2000"),
        |found, w, _| {
            assert_caught(
                found,
                &format!(
                    "{}: the template sets SDK_CONNECT_TIMEOUT_MS to the code's default",
                    w.function
                ),
            )
        },
    );
}

#[test]
fn a_ca_bundle_the_function_cannot_read_is_caught() {
    each_worker_mutated(
        |t, w| variables(t, w)["AWS_CA_BUNDLE"] = yaml("/nonexistent/ca.pem"),
        |found, w, _| {
            assert_caught(
                found,
                &format!(
                    "{}: the code cannot start with the template's environment: environment \
                     variable AWS_CA_BUNDLE=\"/nonexistent/ca.pem\" is invalid: cannot read it",
                    w.function
                ),
            )
        },
    );
}

#[test]
fn a_value_the_code_rejects_is_caught() {
    each_worker_mutated(
        |t, w| variables(t, w)["BATCH_CONCURRENCY"] = yaml("'0'"),
        |found, w, _| {
            assert_caught(
                found,
                &format!(
                    "{}: the code cannot start with the template's environment",
                    w.function
                ),
            );
            assert_caught(found, "BATCH_CONCURRENCY");
        },
    );
}

#[test]
fn an_environment_variable_the_template_sets_but_the_code_ignores_is_caught() {
    each_worker_mutated(
        |t, w| variables(t, w)["JOB_QUEUE"] = yaml("typo"),
        |found, w, _| {
            assert_caught(
                found,
                &format!(
                    "{}: the template sets JOB_QUEUE but the code never reads it",
                    w.function
                ),
            )
        },
    );
}

// ------------------------------------------------ the build profiles

fn manifest_with(change: impl FnOnce(&mut toml::Table)) -> Vec<(String, Vec<String>)> {
    let mut manifest = load_manifest();
    change(&mut manifest);
    variants()
        .into_iter()
        .map(|(label, template)| (label, panic_violations(&manifest, &template)))
        .collect()
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
    for (label, found) in manifest_with(|_| {}) {
        assert_eq!(found, Vec::<String>::new(), "{label}");
    }
}

#[test]
fn a_release_profile_leaving_panic_to_cargo_lambda_is_caught() {
    for (_, found) in manifest_with(|m| {
        profile(m, "release").remove("panic");
    }) {
        assert_caught(
            &found,
            "[profile.release] must set panic = \"unwind\" explicitly",
        );
    }
}

#[test]
fn a_release_profile_that_aborts_on_panic_is_caught() {
    let found = manifest_with(|m| {
        profile(m, "release").insert("panic".into(), "abort".into());
    });
    for ((_, found), (_, template)) in found.iter().zip(variants()) {
        for function in functions(&template) {
            assert_caught(
                found,
                &format!("{function}: profile release builds with panic = \"abort\""),
            );
        }
    }
}

#[test]
fn a_debug_build_profile_that_aborts_on_panic_is_caught() {
    for (_, found) in manifest_with(|m| {
        profile(m, "dev").insert("panic".into(), "abort".into());
    }) {
        assert_caught(
            &found,
            "debug sam build: profile dev builds with panic = \"abort\"",
        );
    }
}

#[test]
fn a_function_built_with_another_profile_is_checked_through_its_inheritance() {
    for (label, mut template) in variants() {
        let function = functions(&template)[0].to_owned();
        resource(&mut template, &function)["Metadata"]["BuildProperties"]["Flags"] =
            yaml("[--profile, lambda]");
        let mut manifest = load_manifest();
        let lambda = profile(&mut manifest, "lambda");
        lambda.insert("inherits".into(), "small".into());
        let small = profile(&mut manifest, "small");
        small.insert("inherits".into(), "release".into());
        small.insert("panic".into(), "abort".into());
        assert_caught(
            &panic_violations(&manifest, &template),
            &format!("{function}: profile lambda builds with panic = \"abort\""),
        );

        profile(&mut manifest, "small").remove("panic");
        assert_eq!(
            panic_violations(&manifest, &template),
            Vec::<String>::new(),
            "{label}"
        );

        resource(&mut template, &function)["Metadata"]["BuildProperties"]["Flags"] =
            yaml("[--profile=missing]");
        assert_caught(
            &panic_violations(&manifest, &template),
            &format!("{function}: profile missing is not defined in Cargo.toml"),
        );
    }
}

// ------------------------------------------------ closed queues

fn queue_policy_statements<'a>(template: &'a mut Value, policy: &str) -> &'a mut Vec<Value> {
    properties(template, policy)["PolicyDocument"]["Statement"]
        .as_sequence_mut()
        .unwrap()
}

fn exemptions(statements: &mut [Value]) -> &mut Vec<Value> {
    statements
        .iter_mut()
        .find(|s| s["Sid"] == "OnlySendersSend")
        .unwrap()["Condition"]["ArnNotLike"]["aws:PrincipalArn"]
        .as_sequence_mut()
        .unwrap()
}

#[test]
fn a_queue_without_a_queue_policy_is_caught() {
    each_worker_mutated(
        |t, w| {
            for queue in [w.queue.as_str(), dead_letter_queue(w)] {
                let policy = queue_policy(t, queue);
                t["Resources"]
                    .as_mapping_mut()
                    .unwrap()
                    .remove(policy.as_str());
            }
        },
        |found, w, _| {
            for queue in [w.queue.as_str(), dead_letter_queue(w)] {
                assert_caught(
                    found,
                    &format!("{queue}: no AWS::SQS::QueuePolicy closes it"),
                );
            }
        },
    );
}

#[test]
fn a_queue_policy_without_the_tls_deny_is_caught() {
    each_worker_mutated(
        |t, w| {
            let policy = queue_policy(t, &w.queue);
            queue_policy_statements(t, &policy).retain(|s| s["Sid"] != "DenyInsecureTransport")
        },
        |found, w, _| {
            assert_caught(
                found,
                &format!(
                    "{}: its queue policy must deny sqs:* when aws:SecureTransport is false",
                    w.queue
                ),
            )
        },
    );
}

#[test]
fn a_queue_policy_that_locks_out_a_sender_or_lets_another_in_is_caught() {
    // The DLQ's policy without the worker: it could not park poison jobs.
    each_worker_mutated(
        |t, w| {
            let policy = queue_policy(t, dead_letter_queue(w));
            exemptions(queue_policy_statements(t, &policy)).clear()
        },
        |found, w, _| {
            assert_caught(
                found,
                &format!(
                    "{}: {} is granted sqs:SendMessage on it but its queue policy denies it",
                    dead_letter_queue(w),
                    role(w)
                ),
            )
        },
    );
    // A role let into the DLQ that no grant sends with.
    each_worker_mutated(
        |t, w| {
            let policy = queue_policy(t, dead_letter_queue(w));
            exemptions(queue_policy_statements(t, &policy)).push(yaml("!GetAtt IntruderRole.Arn"))
        },
        |found, w, _| {
            assert_caught(
                found,
                &format!(
                    "{}: its queue policy lets IntruderRole send, which no grant needs",
                    dead_letter_queue(w)
                ),
            )
        },
    );
    // Anyone.
    each_worker_mutated(
        |t, w| {
            let policy = queue_policy(t, &w.queue);
            exemptions(queue_policy_statements(t, &policy)).push(yaml("'*'"))
        },
        |found, w, _| assert_caught(found, &format!("{}: its queue policy lets * send", w.queue)),
    );
    // No send deny at all.
    each_worker_mutated(
        |t, w| {
            let policy = queue_policy(t, &w.queue);
            queue_policy_statements(t, &policy).retain(|s| s["Sid"] != "OnlySendersSend")
        },
        |found, w, _| {
            assert_caught(
                found,
                &format!(
                    "{}: its queue policy must deny sqs:SendMessage to all but its senders",
                    w.queue
                ),
            )
        },
    );
}

// ------------------------------------------------ a customer-managed key

const KEY: &str = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fn with_key(template: &mut Value) {
    template["Parameters"]["KmsKeyArn"]["Default"] = Value::from(KEY);
}

/// The tables of `template`, by logical id.
fn tables(template: &Value) -> Vec<String> {
    template["Resources"]
        .as_mapping()
        .into_iter()
        .flatten()
        .filter(|(_, r)| r["Type"].as_str() == Some("AWS::DynamoDB::Table"))
        .filter_map(|(name, _)| name.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn with_a_kms_key_every_queue_table_bucket_and_log_group_uses_it() {
    for (label, mut template, worker) in every_worker() {
        with_key(&mut template);
        assert_eq!(violations(&template), Vec::<String>::new(), "{label}");
        // What the check reads: each kind of resource, resolved with the key set.
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
        assert_eq!(resolve(&worker.queue, &["KmsMasterKeyId"]), KEY, "{label}");
        for table in tables(&template) {
            assert_eq!(
                resolve(&table, &["SSESpecification", "KMSMasterKeyId"]),
                KEY,
                "{label}: {table}"
            );
        }
        let logs = worker.log_group.as_deref().expect("a log group of its own");
        assert_eq!(resolve(logs, &["KmsKeyId"]), KEY, "{label}");
    }
}

#[test]
fn a_resource_left_out_of_the_kms_key_is_caught() {
    for (label, mut template, worker) in every_worker() {
        with_key(&mut template);
        let logs = worker.log_group.clone().expect("a log group of its own");
        let dlq = dead_letter_queue(&worker).to_owned();
        let role = role(&worker).to_owned();
        let table = tables(&template)[0].clone();
        properties(&mut template, &logs)
            .as_mapping_mut()
            .unwrap()
            .remove("KmsKeyId");
        properties(&mut template, &dlq)["KmsMasterKeyId"] = yaml("alias/aws/sqs");
        properties(&mut template, &table)["SSESpecification"] = yaml("{SSEEnabled: true}");
        role_statements(&mut template, &role).retain(|s| intrinsic(s, "If").is_none());
        let found = violations(&template);
        for resource in [&logs, &dlq, &table, &role] {
            assert!(
                found
                    .iter()
                    .any(|v| v.contains(&format!("{resource}: with KmsKeyArn {KEY} it needs"))),
                "{label}: {resource} not in {found:?}"
            );
        }
    }
}

#[test]
fn without_a_kms_key_the_defaults_stay() {
    for (label, template) in variants() {
        for table in tables(&template) {
            let mut template = template.clone();
            properties(&mut template, &table)["SSESpecification"] =
                yaml("{SSEEnabled: true, SSEType: KMS, KMSMasterKeyId: alias/mine}");
            let found = violations(&template);
            assert!(
                found.iter().any(|v| v.contains(&format!(
                    "{table}: without KmsKeyArn it needs SSESpecification.SSEEnabled: true"
                ))),
                "{label}: {found:?}"
            );
        }
    }
}

// ------------------------------------------------ tables

#[test]
fn a_table_of_records_the_stack_may_drop_is_caught() {
    for (label, template) in variants() {
        // A table of records has no TTL; one with a TTL (claims that expire) may go with the
        // stack.
        let (records, expiring): (Vec<String>, Vec<String>) =
            tables(&template).into_iter().partition(|table| {
                template["Resources"][table.as_str()]["Properties"]["TimeToLiveSpecification"]
                    .is_null()
            });
        assert!(!records.is_empty(), "{label} has no table of records");
        for table in &records {
            let mut mutated = template.clone();
            let definition = resource(&mut mutated, table).as_mapping_mut().unwrap();
            definition.remove("DeletionPolicy");
            definition.remove("UpdateReplacePolicy");
            properties(&mut mutated, table)["DeletionProtectionEnabled"] = yaml("false");
            let found = violations(&mutated);
            for needs in [
                "DeletionPolicy: Retain",
                "UpdateReplacePolicy: Retain",
                "DeletionProtectionEnabled",
            ] {
                assert_caught(
                    &found,
                    &format!("{table}: a table of records needs {needs}"),
                );
            }
        }
        // Deletion protection off by default: every table of records is caught, no other.
        let mut mutated = template.clone();
        mutated["Parameters"]["DeletionProtection"]["Default"] = yaml("'false'");
        let found = violations(&mutated);
        for table in &records {
            assert_caught(
                &found,
                &format!("{table}: a table of records needs DeletionProtectionEnabled"),
            );
        }
        for table in &expiring {
            assert!(
                !found.iter().any(|v| v.contains(table.as_str())),
                "{label}: {found:?}"
            );
        }
    }
}
