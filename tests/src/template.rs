//! Invariants of `template.yaml` that neither `sam validate` nor `cfn-lint` check, as a function
//! from the parsed template to the list of violations, so tests can run it on the real
//! template (no violation) and on mutated copies (each mutation caught).
//!
//! Values given as `!Ref Parameter` are checked across the parameter's default, bounds and
//! allowed values, so a deploy with other parameter values cannot break them either.

use local_runner::template::{
    condition_holds, get_att, intrinsic, literal_number as number, reference,
};
use serde_yaml_ng::Value;

/// Reads `template.yaml` from the workspace root.
pub fn load() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
    let text = std::fs::read_to_string(path).expect("template.yaml exists");
    serde_yaml_ng::from_str(&text).expect("template.yaml is valid YAML")
}

/// Service prefixes whose actions touch data; granting them on `*` is never least privilege.
const DATA_PLANE: [&str; 7] = [
    "dynamodb",
    "s3",
    "sqs",
    "sns",
    "kms",
    "secretsmanager",
    "ssm",
];

/// Every invariant violation in `template`.
pub fn violations(template: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let resources = template["Resources"]
        .as_mapping()
        .cloned()
        .unwrap_or_default();
    for (name, resource) in &resources {
        let name = name.as_str().unwrap_or("?");
        match resource["Type"].as_str() {
            Some("AWS::SQS::Queue") => check_queue(template, name, resource, &mut found),
            Some("AWS::Serverless::Function") => {
                check_function(template, name, resource, &mut found)
            }
            Some("AWS::IAM::Role") => check_role(name, resource, &mut found),
            Some("AWS::S3::Bucket") => check_bucket(template, name, resource, &mut found),
            Some("AWS::DynamoDB::Table") => check_table(template, name, resource, &mut found),
            Some("AWS::Serverless::HttpApi") => {
                check_http_api(template, name, resource, &mut found)
            }
            _ => {}
        }
    }
    check_mapping_keys(template, &mut found);
    check_queue_policies(template, &mut found);
    check_kms_key(template, &mut found);
    check_mapping_alarms(template, &mut found);
    found
}

pub use local_runner::template::resolve_defaults;

/// A customer-managed key is one parameter away: with `KmsKeyArn` set, every queue, table,
/// bucket and log group is encrypted with it and every function's role may use it; without,
/// the defaults stay (SQS-managed SSE, DynamoDB's default encryption, SSE-S3, no key on logs)
/// and no role is granted any KMS action.
fn check_kms_key(template: &Value, found: &mut Vec<String>) {
    let key = template["Parameters"]["KmsKeyArn"]["Default"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let using = !key.is_empty();
    let is_key = |v: &Value| v.as_str() == Some(key.as_str());
    let resources = template["Resources"]
        .as_mapping()
        .cloned()
        .unwrap_or_default();
    let mut function_roles = Vec::new();
    for resource in resources.values() {
        if resource["Type"].as_str() == Some("AWS::Serverless::Function") {
            if let Some((role, _)) = get_att(&resource["Properties"]["Role"]) {
                function_roles.push(role.to_owned());
            }
        }
    }
    for (name, resource) in &resources {
        let name = name.as_str().unwrap_or("?");
        let properties = resolve_defaults(template, &resource["Properties"]);
        let (ok, expected) = match resource["Type"].as_str() {
            Some("AWS::SQS::Queue") => {
                if using {
                    (
                        is_key(&properties["KmsMasterKeyId"])
                            && properties["SqsManagedSseEnabled"].as_bool() != Some(true),
                        "KmsMasterKeyId: the key",
                    )
                } else {
                    (
                        properties["SqsManagedSseEnabled"].as_bool() == Some(true)
                            && properties["KmsMasterKeyId"].is_null(),
                        "SqsManagedSseEnabled: true",
                    )
                }
            }
            Some("AWS::DynamoDB::Table") => {
                let sse = &properties["SSESpecification"];
                let enabled = sse["SSEEnabled"].as_bool() == Some(true);
                if using {
                    (
                        enabled
                            && sse["SSEType"].as_str() == Some("KMS")
                            && is_key(&sse["KMSMasterKeyId"]),
                        "SSESpecification with SSEType: KMS and KMSMasterKeyId: the key",
                    )
                } else {
                    (
                        enabled && sse["KMSMasterKeyId"].is_null(),
                        "SSESpecification.SSEEnabled: true",
                    )
                }
            }
            Some("AWS::S3::Bucket") => {
                let rules =
                    as_list(&properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]);
                let all = |f: &dyn Fn(&Value) -> bool| {
                    !rules.is_empty()
                        && rules.iter().all(|r| f(&r["ServerSideEncryptionByDefault"]))
                };
                if using {
                    (
                        all(&|d| {
                            d["SSEAlgorithm"].as_str() == Some("aws:kms")
                                && is_key(&d["KMSMasterKeyID"])
                        }),
                        "SSEAlgorithm: aws:kms with KMSMasterKeyID: the key",
                    )
                } else {
                    (
                        all(&|d| d["SSEAlgorithm"].as_str() == Some("AES256")),
                        "SSEAlgorithm: AES256",
                    )
                }
            }
            Some("AWS::Logs::LogGroup") => {
                if using {
                    (is_key(&properties["KmsKeyId"]), "KmsKeyId: the key")
                } else {
                    (properties["KmsKeyId"].is_null(), "no KmsKeyId")
                }
            }
            Some("AWS::IAM::Role") => {
                let statements: Vec<&Value> = as_list(&properties["Policies"])
                    .into_iter()
                    .flat_map(|p| as_list(&p["PolicyDocument"]["Statement"]))
                    .collect();
                let grants = |action: &str| {
                    statements.iter().any(|s| {
                        as_list(&s["Action"])
                            .iter()
                            .any(|a| a.as_str() == Some(action))
                            && as_list(&s["Resource"]).iter().any(|r| is_key(r))
                    })
                };
                let any_kms = statements.iter().any(|s| {
                    as_list(&s["Action"])
                        .iter()
                        .any(|a| a.as_str().is_some_and(|a| a.starts_with("kms:")))
                });
                if !function_roles.iter().any(|r| r == name) {
                    continue;
                }
                if using {
                    (
                        grants("kms:Decrypt") && grants("kms:GenerateDataKey"),
                        "kms:Decrypt and kms:GenerateDataKey on the key",
                    )
                } else {
                    (!any_kms, "no KMS action")
                }
            }
            _ => continue,
        };
        if !ok {
            let with = if using {
                format!("with KmsKeyArn {key}")
            } else {
                "without KmsKeyArn".to_owned()
            };
            found.push(format!("{name}: {with} it needs {expected}"));
        }
    }
}

/// What an access log line must carry: the API's request id, the integration's (the function
/// invocation's, which its log lines carry) and the caller's IAM identity, so every request is
/// tied to who made it and to what the function did with it.
pub const ACCESS_LOG_FIELDS: [&str; 3] = [
    "$context.requestId",
    "$context.integration.requestId",
    "$context.identity.userArn",
];

/// Methods of routes that write (accept work, grant a write) and must be throttled tighter than
/// the stage's default, which reads get. `ANY` (a catch-all that answers unknown routes) is not
/// one of them.
pub const WRITE_METHODS: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

fn check_http_api(template: &Value, name: &str, api: &Value, found: &mut Vec<String>) {
    let properties = &api["Properties"];
    // The route keys the functions' HttpApi events give this API.
    let mut routes = Vec::new();
    for resource in template["Resources"]
        .as_mapping()
        .into_iter()
        .flat_map(|m| m.values())
    {
        for event in resource["Properties"]["Events"]
            .as_mapping()
            .into_iter()
            .flat_map(|m| m.values())
        {
            let event_properties = &event["Properties"];
            if event["Type"].as_str() == Some("HttpApi")
                && reference(&event_properties["ApiId"]) == Some(name)
            {
                let method = event_properties["Method"]
                    .as_str()
                    .unwrap_or("ANY")
                    .to_ascii_uppercase();
                let path = event_properties["Path"].as_str().unwrap_or_default();
                routes.push(format!("{method} {path}"));
            }
        }
    }
    let settings = &properties["RouteSettings"];
    for key in settings.as_mapping().into_iter().flat_map(|m| m.keys()) {
        let key = key.as_str().unwrap_or_default();
        if !routes.iter().any(|r| r == key) {
            found.push(format!(
                "{name}: RouteSettings names {key}, which is no route of the API (the stage would not deploy)"
            ));
        }
    }
    let default = &properties["DefaultRouteSettings"];
    let writes = routes.iter().filter(|route| {
        route
            .split_once(' ')
            .is_some_and(|(method, _)| WRITE_METHODS.contains(&method))
    });
    for route in writes {
        for limit in ["ThrottlingRateLimit", "ThrottlingBurstLimit"] {
            let tight = default_number(template, &settings[route.as_str()][limit]);
            let general = default_number(template, &default[limit]);
            if !matches!((tight, general), (Some(t), Some(g)) if t < g) {
                found.push(format!(
                    "{name}: {route} needs a {limit} below the default route settings' ({general:?})"
                ));
            }
        }
    }
    let format = properties["AccessLogSettings"]["Format"]
        .as_str()
        .unwrap_or_default();
    for field in ACCESS_LOG_FIELDS {
        // `$context.requestId` must not be satisfied by `$context.requestIdXyz`.
        let present = format
            .match_indices(field)
            .any(|(at, _)| !format[at + field.len()..].starts_with(|c: char| c.is_alphanumeric()));
        if !present {
            found.push(format!("{name}: the access log must record {field}"));
        }
    }
}

/// A bucket: a lifecycle rule aborts incomplete multipart uploads within a week, and its policy
/// denies requests without TLS and with TLS below 1.2.
fn check_bucket(template: &Value, name: &str, resource: &Value, found: &mut Vec<String>) {
    let bucket = resolve_defaults(template, resource);
    let aborts = as_list(&bucket["Properties"]["LifecycleConfiguration"]["Rules"])
        .iter()
        .any(|rule| {
            rule["Status"].as_str() == Some("Enabled")
                && number(&rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
                    .is_some_and(|days| days <= 7.0)
        });
    if !aborts {
        found.push(format!(
            "{name}: needs a lifecycle rule aborting incomplete multipart uploads within 7 days"
        ));
    }
    let statements: Vec<Value> = template["Resources"]
        .as_mapping()
        .into_iter()
        .flat_map(|m| m.values())
        .filter(|r| {
            r["Type"].as_str() == Some("AWS::S3::BucketPolicy")
                && reference(&r["Properties"]["Bucket"]) == Some(name)
        })
        .flat_map(|r| as_list(&r["Properties"]["PolicyDocument"]["Statement"]))
        .cloned()
        .collect();
    let denies_all = |s: &Value| {
        s["Effect"].as_str() == Some("Deny")
            && s["Principal"].as_str() == Some("*")
            && as_list(&s["Action"])
                .iter()
                .any(|a| matches!(a.as_str(), Some("s3:*" | "*")))
    };
    let plain = statements.iter().any(|s| {
        let insecure = &s["Condition"]["Bool"]["aws:SecureTransport"];
        denies_all(s) && (*insecure == Value::Bool(false) || insecure.as_str() == Some("false"))
    });
    if !plain {
        found.push(format!(
            "{name}: its bucket policy must deny s3:* when aws:SecureTransport is false"
        ));
    }
    let old_tls = statements.iter().any(|s| {
        denies_all(s) && number(&s["Condition"]["NumericLessThan"]["s3:TlsVersion"]) == Some(1.2)
    });
    if !old_tls {
        found.push(format!(
            "{name}: its bucket policy must deny s3:* when s3:TlsVersion is below 1.2"
        ));
    }
}

/// A table of records (one without a TTL: not a cache of claims that expire) outlives the
/// stack: `DeletionPolicy` and `UpdateReplacePolicy` `Retain`, and deletion protection on by
/// default.
fn check_table(template: &Value, name: &str, table: &Value, found: &mut Vec<String>) {
    if !table["Properties"]["TimeToLiveSpecification"].is_null() {
        return;
    }
    for policy in ["DeletionPolicy", "UpdateReplacePolicy"] {
        if table[policy].as_str() != Some("Retain") {
            found.push(format!("{name}: a table of records needs {policy}: Retain"));
        }
    }
    let protection = resolve_defaults(template, &table["Properties"]["DeletionProtectionEnabled"]);
    let on = protection.as_bool() == Some(true) || protection.as_str() == Some("true");
    if !on {
        found.push(format!(
            "{name}: a table of records needs DeletionProtectionEnabled (true by default)"
        ));
    }
}

/// Closed queues: every queue has an `AWS::SQS::QueuePolicy` that denies every request without
/// TLS and denies `sqs:SendMessage` to every principal but the roles granted it on that queue
/// (and, in the policy, the operators given by the `OperatorPrincipalArn` parameter). A role
/// granted SendMessage but not exempted could not send; a role exempted but not granted is a
/// sender too many.
fn check_queue_policies(template: &Value, found: &mut Vec<String>) {
    let resources = template["Resources"]
        .as_mapping()
        .cloned()
        .unwrap_or_default();
    let of_type = |kind: &str| -> Vec<(String, Value)> {
        resources
            .iter()
            .filter(|(_, r)| r["Type"].as_str() == Some(kind))
            .filter_map(|(name, r)| Some((name.as_str()?.to_owned(), r.clone())))
            .collect()
    };
    let policies = of_type("AWS::SQS::QueuePolicy");
    let roles = of_type("AWS::IAM::Role");
    for (queue, _) in of_type("AWS::SQS::Queue") {
        let statements: Vec<Value> = policies
            .iter()
            .filter(|(_, p)| {
                as_list(&p["Properties"]["Queues"])
                    .iter()
                    .any(|q| reference(q) == Some(queue.as_str()))
            })
            .flat_map(|(_, p)| {
                as_list(&p["Properties"]["PolicyDocument"]["Statement"])
                    .into_iter()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        if statements.is_empty() {
            found.push(format!(
                "{queue}: no AWS::SQS::QueuePolicy closes it (TLS only, SendMessage only from its senders)"
            ));
            continue;
        }
        let denies = |statement: &Value, action: &str| {
            statement["Effect"].as_str() == Some("Deny")
                && statement["Principal"].as_str() == Some("*")
                && as_list(&statement["Action"]).iter().any(
                    |a| matches!(a.as_str(), Some(a) if a == action || a == "sqs:*" || a == "*"),
                )
        };
        let tls_only = statements.iter().any(|s| {
            let insecure = &s["Condition"]["Bool"]["aws:SecureTransport"];
            denies(s, "sqs:*")
                && (*insecure == Value::Bool(false) || insecure.as_str() == Some("false"))
        });
        if !tls_only {
            found.push(format!(
                "{queue}: its queue policy must deny sqs:* when aws:SecureTransport is false"
            ));
        }
        let senders: Vec<&str> = roles
            .iter()
            .filter(|(_, role)| {
                role_statements(role).iter().any(|s| {
                    s["Effect"].as_str() == Some("Allow")
                        && as_list(&s["Action"])
                            .iter()
                            .any(|a| matches!(a.as_str(), Some("sqs:SendMessage" | "sqs:*")))
                        && as_list(&s["Resource"])
                            .iter()
                            .any(|r| get_att(r) == Some((queue.as_str(), "Arn")))
                })
            })
            .map(|(name, _)| name.as_str())
            .collect();
        let Some(send_deny) = statements
            .iter()
            .find(|s| denies(s, "sqs:SendMessage") && s["Condition"]["Bool"].is_null())
        else {
            found.push(format!(
                "{queue}: its queue policy must deny sqs:SendMessage to all but its senders {senders:?}"
            ));
            continue;
        };
        let exempt = as_list(&send_deny["Condition"]["ArnNotLike"]["aws:PrincipalArn"]);
        let exempt_roles: Vec<&str> = exempt
            .iter()
            .filter_map(|e| get_att(e).map(|(role, _)| role))
            .collect();
        for sender in &senders {
            if !exempt_roles.contains(sender) {
                found.push(format!(
                    "{queue}: {sender} is granted sqs:SendMessage on it but its queue policy denies it"
                ));
            }
        }
        for role in &exempt_roles {
            if !senders.contains(role) {
                found.push(format!(
                    "{queue}: its queue policy lets {role} send, which no grant needs"
                ));
            }
        }
        for other in exempt.iter().filter(|e| get_att(e).is_none()) {
            let text = other
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| serde_yaml_ng::to_string(other).unwrap_or_default());
            if !text.contains("OperatorPrincipalArn") {
                found.push(format!(
                    "{queue}: its queue policy lets {} send (only the senders' roles and OperatorPrincipalArn may)",
                    text.trim()
                ));
            }
        }
    }
}

/// A `!FindInMap` keyed by `!Ref Parameter` needs a String parameter whose allowed values are
/// quoted and each a key of the map: LocalStack's CloudFormation passes a Number parameter on
/// as an integer and the lookup fails, and an allowed value without an entry fails the deploy
/// that picks it.
fn check_mapping_keys(template: &Value, found: &mut Vec<String>) {
    for args in find_in_maps(template) {
        let [map, key, _] = args else {
            continue;
        };
        let (Some(map), Some(param)) = (map.as_str(), reference(key)) else {
            continue;
        };
        let parameter = &template["Parameters"][param];
        if parameter["Type"].as_str() != Some("String") {
            found.push(format!(
                "{param}: keys the {map} mapping, so it must be Type: String"
            ));
        }
        for allowed in parameter["AllowedValues"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            match allowed.as_str() {
                Some(text) if !template["Mappings"][map][text].is_null() => {}
                Some(text) => found.push(format!(
                    "{param}: allowed value {text:?} has no entry in the {map} mapping"
                )),
                None => found.push(format!(
                    "{param}: allowed value {allowed:?} must be quoted (it keys the {map} mapping)"
                )),
            }
        }
    }
}

/// The arguments of every `!FindInMap` in `value`.
fn find_in_maps(value: &Value) -> Vec<&[Value]> {
    let mut lookups = Vec::new();
    if let Some(args) = intrinsic(value, "FindInMap").and_then(Value::as_sequence) {
        lookups.push(args.as_slice());
    }
    match value {
        Value::Mapping(entries) => lookups.extend(entries.values().flat_map(find_in_maps)),
        Value::Sequence(items) => lookups.extend(items.iter().flat_map(find_in_maps)),
        Value::Tagged(tagged) => lookups.extend(find_in_maps(&tagged.value)),
        _ => {}
    }
    lookups
}

/// A number given literally or as `!Ref Param`: its possible values (the parameter's default,
/// bounds and allowed values).
fn possible_numbers(template: &Value, value: &Value) -> Vec<f64> {
    if let Some(n) = number(value) {
        return vec![n];
    }
    let Some(param) = reference(value) else {
        return Vec::new();
    };
    let parameter = &template["Parameters"][param];
    let mut values: Vec<f64> = ["Default", "MinValue", "MaxValue"]
        .iter()
        .filter_map(|k| number(&parameter[*k]))
        .collect();
    if let Some(allowed) = parameter["AllowedValues"].as_sequence() {
        values.extend(allowed.iter().filter_map(number));
    }
    values
}

/// The value a literal or `!Ref Param` has by default.
fn default_number(template: &Value, value: &Value) -> Option<f64> {
    number(value).or_else(|| number(&template["Parameters"][reference(value)?]["Default"]))
}

fn check_queue(template: &Value, name: &str, queue: &Value, found: &mut Vec<String>) {
    let properties = &queue["Properties"];
    let redrive = &properties["RedrivePolicy"];
    if redrive.is_null() && !consumers(template, name).is_empty() {
        found.push(format!(
            "{name}: a queue a function consumes needs a RedrivePolicy to a DLQ"
        ));
    }
    if let Some(dlq) = get_att_resource_of(&redrive["deadLetterTargetArn"]) {
        let retention = default_number(
            template,
            &template["Resources"][dlq]["Properties"]["MessageRetentionPeriod"],
        );
        if retention != Some(1_209_600.0) {
            found.push(format!(
                "{dlq}: a dead-letter queue keeps messages for 14 days (1209600 s)"
            ));
        }
    }
    if !redrive.is_null() {
        let counts = possible_numbers(template, &redrive["maxReceiveCount"]);
        if counts.is_empty() || counts.iter().any(|c| *c < 5.0) {
            found.push(format!("{name}: maxReceiveCount must be at least 5"));
        }
    }
    if properties["FifoQueue"].as_bool() == Some(true) {
        for function in consumers(template, name) {
            let batch = default_number(template, &function["Properties"]["BatchSize"]);
            if batch.is_some_and(|b| b > 10.0) {
                found.push(format!(
                    "{name}: a FIFO queue allows a batch size of at most 10"
                ));
            }
        }
    }
}

/// The SQS events that read from the queue `queue_name`.
fn consumers<'a>(template: &'a Value, queue_name: &str) -> Vec<&'a Value> {
    let mut events = Vec::new();
    for resource in template["Resources"]
        .as_mapping()
        .into_iter()
        .flat_map(|m| m.values())
    {
        for event in resource["Properties"]["Events"]
            .as_mapping()
            .into_iter()
            .flat_map(|m| m.values())
        {
            if event["Type"].as_str() == Some("SQS")
                && get_att_resource_of(&event["Properties"]["Queue"]) == Some(queue_name)
            {
                events.push(event);
            }
        }
    }
    events
}

/// The visibility timeouts the queue can get, by processor timeout.
fn visibility_by_timeout(template: &Value, queue: &Value) -> Vec<(f64, f64)> {
    let visibility = &queue["Properties"]["VisibilityTimeout"];
    if let Some(seconds) = number(visibility) {
        return vec![(f64::NAN, seconds)];
    }
    // !FindInMap [Map, !Ref TimeoutParameter, Seconds], keyed by the function's timeout
    let Value::Tagged(tagged) = visibility else {
        return Vec::new();
    };
    let Some(args) = tagged
        .value
        .as_sequence()
        .filter(|_| tagged.tag == "FindInMap")
    else {
        return Vec::new();
    };
    let map = &template["Mappings"][args[0].as_str().unwrap_or_default()];
    map.as_mapping()
        .into_iter()
        .flat_map(|m| m.iter())
        .filter_map(|(key, entry)| {
            let timeout = number(key)?;
            Some((timeout, number(&entry[args[2].as_str()?])?))
        })
        .collect()
}

fn check_function(template: &Value, name: &str, function: &Value, found: &mut Vec<String>) {
    let properties = &function["Properties"];
    for event in properties["Events"]
        .as_mapping()
        .into_iter()
        .flat_map(|m| m.values())
    {
        if event["Type"].as_str() != Some("SQS") {
            continue;
        }
        let event_properties = &event["Properties"];
        let types: Vec<&str> = event_properties["FunctionResponseTypes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !types.contains(&"ReportBatchItemFailures") {
            found.push(format!(
                "{name}: the SQS event must set FunctionResponseTypes: [ReportBatchItemFailures]"
            ));
        }
        check_mapping_mode(template, name, event_properties, found);
        let metrics: Vec<&str> = event_properties["MetricsConfig"]["Metrics"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !metrics.contains(&"EventCount") {
            found.push(format!(
                "{name}: the SQS event must set MetricsConfig: {{Metrics: [EventCount]}}"
            ));
        }
        let batches = possible_numbers(template, &event_properties["BatchSize"]);
        let windows = possible_numbers(
            template,
            &event_properties["MaximumBatchingWindowInSeconds"],
        );
        let largest_batch = batches.iter().copied().fold(10.0, f64::max);
        // No window at all is a window of 0 s.
        let smallest_window =
            windows
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min)
                .min(if windows.is_empty() {
                    0.0
                } else {
                    f64::INFINITY
                });
        if largest_batch > 10.0 && smallest_window < 1.0 {
            found.push(format!(
                "{name}: a batch size above 10 needs a batching window of at least 1 s"
            ));
        }
        check_every_record_starts(
            template,
            name,
            largest_batch,
            &properties["Environment"]["Variables"]["BATCH_CONCURRENCY"],
            found,
        );
        let largest_window = windows.iter().copied().fold(0.0, f64::max);
        let timeouts = possible_numbers(template, &properties["Timeout"]);
        let queue_name = get_att_resource_of(&event_properties["Queue"]).unwrap_or_default();
        let queue = &template["Resources"][queue_name];
        let visibilities = visibility_by_timeout(template, queue);
        for timeout in &timeouts {
            let visibility = visibilities
                .iter()
                .find(|(t, _)| t.is_nan() || t == timeout)
                .map(|(_, v)| *v);
            match visibility {
                Some(v) if v >= 6.0 * timeout + largest_window => {}
                _ => found.push(format!(
                    "{queue_name}: visibility timeout must be at least 6 x {timeout} s + {largest_window} s"
                )),
            }
        }
    }

    // Without a Role of its own, SAM generates one and attaches managed policies to it
    // (basic execution, X-Ray, and for an SQS event receive/delete on every queue).
    if properties["Role"].is_null() {
        found.push(format!(
            "{name}: needs Role: a role written out in the template (SAM's generated role \
             attaches managed policies on *)"
        ));
    }
    for statement in properties["Policies"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|policy| as_list(&policy["Statement"]))
    {
        check_statement(name, statement, found);
    }
    for policy in properties["Policies"].as_sequence().into_iter().flatten() {
        if let Some(managed) = policy.as_str() {
            found.push(format!(
                "{name}: managed policy {managed} is broader than the function needs"
            ));
        }
    }

    let binary = function["Metadata"]["BuildProperties"]["Binary"]
        .as_str()
        .unwrap_or_default();
    found.extend(crate::settings::environment_violations(
        template,
        name,
        binary,
        &properties["Environment"]["Variables"],
    ));
}

/// The library's `BATCH_CONCURRENCY` when the template does not set it.
const DEFAULT_BATCH_CONCURRENCY: f64 = 10.0;

/// Every record of the largest batch must start at once, with the smallest `BATCH_CONCURRENCY`
/// the function can get: `BatchSize` ≤ `BatchConcurrency` for every allowed pair.
///
/// Why no looser factor: a record can run until the invocation's stop time (a long job works
/// step after step until then), so one invocation may start no more records than it runs at
/// once. A record that does not start is reported failed, and SQS counts a
/// receive each time: a batch larger than the concurrency could send records to the
/// dead-letter queue as `maxReceiveCount` exceeded without their ever running. With the bound,
/// a record of a standard queue always starts in the invocation that received it (an
/// invocation begins with its whole timeout, far above the deadline margin).
fn check_every_record_starts(
    template: &Value,
    name: &str,
    largest_batch: f64,
    batch_concurrency: &Value,
    found: &mut Vec<String>,
) {
    let smallest_concurrency = if batch_concurrency.is_null() {
        DEFAULT_BATCH_CONCURRENCY
    } else {
        possible_numbers(template, batch_concurrency)
            .into_iter()
            .fold(f64::INFINITY, f64::min)
    };
    if largest_batch > smallest_concurrency {
        found.push(format!(
            "{name}: a batch of up to {largest_batch} records does not all start with \
             BATCH_CONCURRENCY as low as {smallest_concurrency}: records not started burn \
             receives toward maxReceiveCount (keep BatchSize at most BatchConcurrency)"
        ));
    }
}

/// Actions that accept no resource but `*` and that a role may therefore grant on it: X-Ray's
/// writes (for a function with `Tracing: Active`). Nothing else is allowed on `*`.
pub const STAR_ONLY_ACTIONS: [&str; 2] = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"];

/// Managed policies a role may have attached. None: every grant is an inline statement.
pub const ALLOWED_MANAGED_POLICIES: [&str; 0] = [];

/// An inline statement of `owner`: no data-plane action on `*` (source level; after the
/// transform, [`transformed_violations`] allows nothing on `*` but [`STAR_ONLY_ACTIONS`]).
fn check_statement(owner: &str, statement: &Value, found: &mut Vec<String>) {
    let resources = as_list(&statement["Resource"]);
    if !resources.iter().any(|r| r.as_str() == Some("*")) {
        return;
    }
    for action in as_list(&statement["Action"]) {
        let action = action.as_str().unwrap_or_default();
        let service = action.split(':').next().unwrap_or_default();
        if DATA_PLANE.contains(&service) {
            found.push(format!(
                "{owner}: grants the data-plane action {action} on *"
            ));
        }
    }
}

fn check_role(name: &str, role: &Value, found: &mut Vec<String>) {
    for statement in role_statements(role) {
        check_statement(name, statement, found);
    }
    for managed in as_list(&role["Properties"]["ManagedPolicyArns"]) {
        let managed = managed
            .as_str()
            .map_or_else(|| format!("{managed:?}"), str::to_owned);
        found.push(format!(
            "{name}: managed policy {managed} attached (grant inline, on named resources)"
        ));
    }
}

/// Every SQS event's mapping has an alarm on its `FailedInvokeEventCount` (`AWS/Lambda`, by
/// `EventSourceMappingUUID`: the `!Ref` of the mapping SAM generates, function id + event id),
/// created by a deploy with the parameters' defaults (a `Condition` may leave it out where the
/// deploy target cannot resolve that reference, LocalStack, but must hold by default); and every
/// such alarm watches a mapping the template has, so an alarm left behind by a removed worker
/// is caught too.
fn check_mapping_alarms(template: &Value, found: &mut Vec<String>) {
    let mappings: Vec<String> = workers(template)
        .into_iter()
        .map(|w| format!("{}{}", w.function, w.event))
        .collect();
    let mut alarmed = Vec::new();
    for (name, alarm) in template["Resources"].as_mapping().into_iter().flatten() {
        let properties = &alarm["Properties"];
        if alarm["Type"].as_str() != Some("AWS::CloudWatch::Alarm")
            || properties["MetricName"].as_str() != Some("FailedInvokeEventCount")
        {
            continue;
        }
        let name = name.as_str().unwrap_or("?");
        let watched = as_list(&properties["Dimensions"])
            .into_iter()
            .filter(|d| d["Name"].as_str() == Some("EventSourceMappingUUID"))
            .find_map(|d| reference(&d["Value"]));
        let Some(mapping) = watched.filter(|m| mappings.iter().any(|known| known == m)) else {
            found.push(format!(
                "{name}: an alarm on FailedInvokeEventCount must name an SQS event's mapping \
                 (EventSourceMappingUUID: !Ref FunctionEvent), not {watched:?}"
            ));
            continue;
        };
        if properties["Namespace"].as_str() != Some("AWS/Lambda") {
            found.push(format!("{name}: FailedInvokeEventCount is in AWS/Lambda"));
        }
        match alarm["Condition"].as_str() {
            Some(condition) if !condition_holds(template, condition) => found.push(format!(
                "{name}: its condition {condition} is false with the parameters' defaults, \
                 so a deploy leaves {mapping} without its alarm"
            )),
            _ => alarmed.push(mapping),
        }
    }
    for mapping in &mappings {
        if !alarmed.contains(&mapping.as_str()) {
            found.push(format!(
                "{mapping}: the event source mapping needs an alarm on FailedInvokeEventCount \
                 (EventSourceMappingUUID: !Ref {mapping})"
            ));
        }
    }
}

/// An SQS event's mapping runs on demand, bounded by `ScalingConfig.MaximumConcurrency`
/// (2..1000), or, where a `ProvisionedPollerConfig` is possible, in provisioned mode under one
/// condition that also leaves `ScalingConfig` out: Lambda refuses both at once.
fn check_mapping_mode(template: &Value, name: &str, event: &Value, found: &mut Vec<String>) {
    let scaling = if_branches(&event["ScalingConfig"]);
    let on_demand: Vec<&Value> = scaling.iter().filter(|s| !s.is_null()).copied().collect();
    let concurrency: Vec<f64> = on_demand
        .iter()
        .flat_map(|s| possible_numbers(template, &s["MaximumConcurrency"]))
        .collect();
    if on_demand.is_empty()
        || concurrency.is_empty()
        || concurrency.iter().any(|c| !(2.0..=1000.0).contains(c))
    {
        found.push(format!(
            "{name}: ScalingConfig.MaximumConcurrency must be within 2..1000"
        ));
    }
    let pollers = &event["ProvisionedPollerConfig"];
    if pollers.is_null() {
        return;
    }
    /// The condition of `!If [C, a, b]` whose branch `present` (1 or 2) holds the setting and
    /// the other `AWS::NoValue`.
    fn condition(value: &Value, present: usize) -> Option<&str> {
        let args = intrinsic(value, "If").and_then(Value::as_sequence)?;
        (args.len() == 3 && reference(&args[3 - present]) == Some("AWS::NoValue"))
            .then(|| args[0].as_str())
            .flatten()
    }
    // ProvisionedPollerConfig: !If [C, {...}, NoValue]; ScalingConfig: !If [C, NoValue, {...}].
    let provisioned_when = condition(pollers, 1);
    if provisioned_when.is_none() || provisioned_when != condition(&event["ScalingConfig"], 2) {
        found.push(format!(
            "{name}: ProvisionedPollerConfig and ScalingConfig must be set under one condition, \
             never both (Lambda refuses MaximumConcurrency in provisioned mode)"
        ));
    }
}

/// The statements of a role's inline policies; both branches of a `!If` statement.
fn role_statements(role: &Value) -> Vec<&Value> {
    as_list(&role["Properties"]["Policies"])
        .into_iter()
        .flat_map(|policy| as_list(&policy["PolicyDocument"]["Statement"]))
        .flat_map(if_branches)
        .collect()
}

/// A value, or both branches of an `!If` (`AWS::NoValue` dropped).
fn if_branches(value: &Value) -> Vec<&Value> {
    match intrinsic(value, "If").and_then(Value::as_sequence) {
        Some(args) if args.len() == 3 => args[1..]
            .iter()
            .filter(|v| reference(v) != Some("AWS::NoValue"))
            .flat_map(if_branches)
            .collect(),
        _ => vec![value],
    }
}

/// Path of the script that prints the transformed template.
const TRANSFORM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/tools/transform.py");
const TOOLS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/tools/tools.sh");

/// `template` after the SAM transform, as CloudFormation deploys it: the pinned SAM translator
/// in the tools venv (`infra/tools/tools.sh python infra/tools/transform.py`), offline.
pub fn transform(template: &Value) -> Value {
    let dir = std::env::temp_dir().join(format!(
        "template-transform-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let path = dir.join("template.yaml");
    std::fs::write(
        &path,
        serde_yaml_ng::to_string(template).expect("serialisable"),
    )
    .expect("temporary template written");
    let output = std::process::Command::new(TOOLS)
        .arg("python")
        .arg(TRANSFORM)
        .arg(&path)
        .output()
        .expect("infra/tools/tools.sh runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "the SAM transform failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_yaml_ng::from_slice(&output.stdout).expect("the transform prints JSON")
}

/// Least privilege in the transformed template (what CloudFormation deploys): no role has a
/// managed policy attached beyond [`ALLOWED_MANAGED_POLICIES`], no allowed statement of any
/// role or policy grants anything on `*` but [`STAR_ONLY_ACTIONS`] (nor uses `NotAction` or
/// `NotResource`), and only roles of functions with active tracing get X-Ray.
pub fn transformed_violations(transformed: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let resources = transformed["Resources"]
        .as_mapping()
        .cloned()
        .unwrap_or_default();
    let mut traced_roles = Vec::new();
    for resource in resources.values() {
        if resource["Type"].as_str() == Some("AWS::Lambda::Function")
            && resource["Properties"]["TracingConfig"]["Mode"].as_str() == Some("Active")
        {
            if let Some((role, _)) = get_att(&resource["Properties"]["Role"]) {
                traced_roles.push(role.to_owned());
            }
        }
    }
    for (name, resource) in &resources {
        let name = name.as_str().unwrap_or("?");
        let statements: Vec<&Value> = match resource["Type"].as_str() {
            Some("AWS::IAM::Role") => {
                for managed in as_list(&resource["Properties"]["ManagedPolicyArns"]) {
                    let arn = managed
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| {
                            intrinsic(managed, "Sub").and_then(|s| s.as_str().map(str::to_owned))
                        })
                        .unwrap_or_else(|| format!("{managed:?}"));
                    if !ALLOWED_MANAGED_POLICIES.iter().any(|a| arn.ends_with(a)) {
                        found.push(format!("{name}: managed policy {arn} attached"));
                    }
                }
                role_statements(resource)
            }
            Some("AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy") => {
                as_list(&resource["Properties"]["PolicyDocument"]["Statement"])
                    .into_iter()
                    .flat_map(if_branches)
                    .collect()
            }
            _ => continue,
        };
        for statement in statements {
            if statement["Effect"].as_str() != Some("Allow") {
                continue;
            }
            if !statement["NotAction"].is_null() || !statement["NotResource"].is_null() {
                found.push(format!("{name}: an Allow with NotAction or NotResource"));
            }
            let on_star = as_list(&statement["Resource"])
                .iter()
                .any(|r| r.as_str() == Some("*"));
            for action in as_list(&statement["Action"]) {
                let action = action.as_str().unwrap_or_default();
                let star_only = STAR_ONLY_ACTIONS.contains(&action);
                if on_star && !star_only {
                    found.push(format!("{name}: grants {action} on *"));
                }
                if star_only && !traced_roles.iter().any(|r| r == name) {
                    found.push(format!(
                        "{name}: grants {action} but no function with Tracing: Active uses it"
                    ));
                }
            }
        }
    }
    found
}

/// An SQS-triggered function of the template and what it is wired to, by logical id: what a
/// test of the invariants breaks, whichever workers a fork has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    /// The `AWS::Serverless::Function`.
    pub function: String,
    /// Its SQS event, under `Properties.Events`.
    pub event: String,
    /// The queue the event reads (`Queue: !GetAtt Queue.Arn`).
    pub queue: String,
    /// The queue's redrive target, if it has one.
    pub dead_letter_queue: Option<String>,
    /// `Role: !GetAtt Role.Arn`, if the function names one.
    pub role: Option<String>,
    /// `LoggingConfig.LogGroup: !Ref LogGroup`, if set.
    pub log_group: Option<String>,
}

/// Every SQS event of every function of `template`, in the template's order.
pub fn workers(template: &Value) -> Vec<Worker> {
    let mut found = Vec::new();
    for (name, resource) in template["Resources"].as_mapping().into_iter().flatten() {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let properties = &resource["Properties"];
        for (event, definition) in properties["Events"].as_mapping().into_iter().flatten() {
            if definition["Type"].as_str() != Some("SQS") {
                continue;
            }
            let Some(queue) = get_att_resource_of(&definition["Properties"]["Queue"]) else {
                continue;
            };
            found.push(Worker {
                function: name.as_str().unwrap_or("?").to_owned(),
                event: event.as_str().unwrap_or("?").to_owned(),
                queue: queue.to_owned(),
                dead_letter_queue: get_att_resource_of(
                    &template["Resources"][queue]["Properties"]["RedrivePolicy"]
                        ["deadLetterTargetArn"],
                )
                .map(str::to_owned),
                role: get_att_resource_of(&properties["Role"]).map(str::to_owned),
                log_group: reference(&properties["LoggingConfig"]["LogGroup"]).map(str::to_owned),
            });
        }
    }
    found
}

fn as_list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Sequence(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// The resource of a `!GetAtt Resource.Attribute`.
fn get_att_resource_of(value: &Value) -> Option<&str> {
    get_att(value).map(|(resource, _)| resource)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::examples::variants;

    fn not_all_started(template: &Value, function: &str) -> Vec<String> {
        violations(template)
            .into_iter()
            .filter(|v| v.starts_with(&format!("{function}:")) && v.contains("does not all start"))
            .collect()
    }

    fn sqs_event<'a>(template: &'a mut Value, worker: &Worker) -> &'a mut Value {
        &mut template["Resources"][worker.function.as_str()]["Properties"]["Events"]
            [worker.event.as_str()]["Properties"]
    }

    fn variables<'a>(template: &'a mut Value, worker: &Worker) -> &'a mut Value {
        &mut template["Resources"][worker.function.as_str()]["Properties"]["Environment"]["Variables"]
    }

    /// Every SQS-triggered function of every template a fork can have (with and without each
    /// example), with its template.
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

    #[test]
    fn every_allowed_batch_starts_at_once_with_every_allowed_concurrency() {
        for (label, template, worker) in every_worker() {
            assert_eq!(
                not_all_started(&template, &worker.function),
                Vec::<String>::new(),
                "{label}"
            );
        }
    }

    #[test]
    fn a_batch_larger_than_the_smallest_concurrency_is_caught() {
        for (label, mut template, worker) in every_worker() {
            // BatchConcurrency from a parameter that allows 2..100, with a batch of 10.
            template["Parameters"]["TestConcurrency"] =
                serde_yaml_ng::from_str("{Type: Number, Default: 100, MinValue: 2, MaxValue: 100}")
                    .unwrap();
            variables(&mut template, &worker)["BATCH_CONCURRENCY"] =
                serde_yaml_ng::from_str("!Ref TestConcurrency").unwrap();
            sqs_event(&mut template, &worker)["BatchSize"] = Value::from(10);
            let found = not_all_started(&template, &worker.function);
            assert_eq!(found.len(), 1, "{label}: {found:?}");
            assert!(found[0].contains("as low as 2"), "{label}: {found:?}");
            // A batch of 100 with a concurrency of 100, always: every record starts.
            variables(&mut template, &worker)["BATCH_CONCURRENCY"] = Value::from("100");
            sqs_event(&mut template, &worker)["BatchSize"] = Value::from(100);
            sqs_event(&mut template, &worker)["MaximumBatchingWindowInSeconds"] = Value::from(1);
            assert_eq!(
                not_all_started(&template, &worker.function),
                Vec::<String>::new(),
                "{label}"
            );
        }
    }

    #[test]
    fn without_batch_concurrency_the_librarys_default_is_the_bound() {
        for (label, mut template, worker) in every_worker() {
            if let Some(variables) = variables(&mut template, &worker).as_mapping_mut() {
                variables.remove("BATCH_CONCURRENCY");
            }
            sqs_event(&mut template, &worker)["BatchSize"] = Value::from(10);
            assert_eq!(
                not_all_started(&template, &worker.function),
                Vec::<String>::new(),
                "{label}"
            );
            sqs_event(&mut template, &worker)["BatchSize"] = Value::from(11);
            let found = not_all_started(&template, &worker.function);
            assert!(
                found.first().is_some_and(|v| v.contains("as low as 10")),
                "{label}: {found:?}"
            );
        }
    }
}
