//! Creating the template's queues, tables and bucket on a local endpoint, with the template's
//! settings, and resolving what the functions see: their environment and the event source
//! mapping's settings. Provisioning is idempotent: running it again changes nothing.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_yaml_ng::Value;

use crate::esm::MappingSettings;
use crate::template::{Template, TemplateError, get_att, intrinsic, reference, scalar_text};

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The template asks for something the runner does not understand.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The endpoint refused a request.
    #[error("{action} failed on the local endpoint")]
    Endpoint {
        /// What was being done.
        action: String,
        /// The SDK error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn endpoint<E: std::error::Error + Send + Sync + 'static>(
    action: impl Into<String>,
) -> impl FnOnce(E) -> ProvisionError {
    let action = action.into();
    move |source| ProvisionError::Endpoint {
        action,
        source: Box::new(source),
    }
}

/// The clients provisioning uses.
#[derive(Debug, Clone)]
pub struct Clients {
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// DynamoDB.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// S3 (path-style for emulators).
    pub s3: aws_sdk_s3::Client,
}

/// The local resources, by the template's logical ids.
#[derive(Debug, Clone, Default)]
pub struct Provisioned {
    refs: HashMap<String, String>,
    arns: HashMap<String, String>,
}

impl Provisioned {
    /// What `!Ref LogicalId` gives: a queue URL, a table or bucket name.
    pub fn reference(&self, logical_id: &str) -> Option<&str> {
        self.refs.get(logical_id).map(String::as_str)
    }

    /// The resource's ARN.
    pub fn arn(&self, logical_id: &str) -> Option<&str> {
        self.arns.get(logical_id).map(String::as_str)
    }

    /// The environment variables of function `function`, resolved against the local resources
    /// and the parameters' defaults.
    pub fn function_env(
        &self,
        template: &Template,
        function: &str,
    ) -> Result<Vec<(String, String)>, TemplateError> {
        let variables =
            &template.root()["Resources"][function]["Properties"]["Environment"]["Variables"];
        let mut env = Vec::new();
        for (name, value) in variables.as_mapping().into_iter().flatten() {
            let name = name.as_str().unwrap_or_default().to_owned();
            let resolved = self.resolve(template, value).ok_or_else(|| {
                TemplateError::Unsupported(format!("{function}: cannot resolve {name}"))
            })?;
            env.push((name, resolved));
        }
        Ok(env)
    }

    fn resolve(&self, template: &Template, value: &Value) -> Option<String> {
        if let Some(name) = reference(value) {
            return self
                .reference(name)
                .map(str::to_owned)
                .or_else(|| template.parameter_default(name).and_then(scalar_text));
        }
        if let Some((resource, "Arn")) = get_att(value) {
            return self.arn(resource).map(str::to_owned);
        }
        scalar_text(value)
    }
}

/// The services the local tooling uses that have no endpoint override (`AWS_ENDPOINT_URL` or
/// `AWS_ENDPOINT_URL_<SERVICE>`), and would therefore reach real AWS.
fn services_without_local_endpoint() -> Vec<&'static str> {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
    if set("AWS_ENDPOINT_URL") {
        return Vec::new();
    }
    ["SQS", "DYNAMODB", "S3"]
        .into_iter()
        .filter(|service| !set(&format!("AWS_ENDPOINT_URL_{service}")))
        .collect()
}

/// The functions' own SDK configuration (so the runner runs exactly what Lambda runs) and the
/// clients provisioning uses, once every service has a local endpoint.
pub async fn local_clients() -> anyhow::Result<(aws_config::SdkConfig, Clients)> {
    let sdk = queue_worker::aws::load_sdk_config(&queue_worker::Env::from_process()).await?;
    let unset = services_without_local_endpoint();
    anyhow::ensure!(
        unset.is_empty(),
        "no local endpoint for {}: set AWS_ENDPOINT_URL or the per-service variables \
         (eval \"$(make -s emulator-env)\"); the runner never touches real AWS",
        unset.join(", ")
    );
    let clients = Clients {
        sqs: aws_sdk_sqs::Client::new(&sdk),
        dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
        s3: aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        ),
    };
    Ok((sdk, clients))
}

/// The event source mapping settings of `function`'s SQS event, and the queue it reads.
pub fn mapping_settings(
    template: &Template,
    function: &str,
) -> Result<(String, MappingSettings), TemplateError> {
    let properties = &template.root()["Resources"][function]["Properties"];
    let event = properties["Events"]
        .as_mapping()
        .into_iter()
        .flatten()
        .map(|(_, event)| event)
        .find(|event| event["Type"].as_str() == Some("SQS"))
        .ok_or_else(|| TemplateError::Unsupported(format!("{function} has no SQS event")))?;
    let event = &event["Properties"];
    let queue = get_att(&event["Queue"])
        .map(|(queue, _)| queue.to_owned())
        .ok_or_else(|| {
            TemplateError::Unsupported(format!(
                "{function}: the SQS event's Queue must be !GetAtt Queue.Arn"
            ))
        })?;
    // Conditional settings (provisioned mode) as a deploy with the defaults resolves them.
    let event = &template.resolved(event);
    let number = |value: &Value, default: f64| template.number(value).unwrap_or(default);
    let timeout = template
        .number(&properties["Timeout"])
        .or_else(|| template.number(&template.root()["Globals"]["Function"]["Timeout"]))
        .unwrap_or(3.0);
    let reports = event["FunctionResponseTypes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .any(|t| t.as_str() == Some("ReportBatchItemFailures"));
    Ok((
        queue,
        MappingSettings {
            batch_size: number(&event["BatchSize"], 10.0) as usize,
            batching_window: Duration::from_secs_f64(number(
                &event["MaximumBatchingWindowInSeconds"],
                0.0,
            )),
            // In provisioned mode each poller runs up to 10 invocations at once.
            maximum_concurrency: match event["ProvisionedPollerConfig"]["MaximumPollers"] {
                Value::Null => number(&event["ScalingConfig"]["MaximumConcurrency"], 1000.0),
                ref pollers => 10.0 * number(pollers, 200.0),
            } as usize,
            function_timeout: Duration::from_secs_f64(timeout),
            report_batch_item_failures: reports,
        },
    ))
}

/// A name for a resource the template does not name: `stack-logicalid`, lower-cased.
fn physical_name(stack: &str, logical_id: &str) -> String {
    format!("{stack}-{logical_id}").to_ascii_lowercase()
}

/// Resolves a `!Sub` or literal name; only `${AWS::StackName}` is substituted.
fn name(template_value: &Value, stack: &str, logical_id: &str) -> Result<String, TemplateError> {
    if template_value.is_null() {
        return Ok(physical_name(stack, logical_id));
    }
    let text = intrinsic(template_value, "Sub")
        .and_then(Value::as_str)
        .or_else(|| template_value.as_str())
        .ok_or_else(|| TemplateError::Unsupported(format!("{logical_id}: unsupported name")))?;
    let resolved = text.replace("${AWS::StackName}", stack);
    if resolved.contains("${") {
        return Err(TemplateError::Unsupported(format!(
            "{logical_id}: cannot resolve {text}"
        )));
    }
    Ok(resolved)
}

/// Creates (or finds) every queue, table and bucket of `template` under the name prefix `stack`.
pub async fn provision(
    template: &Template,
    stack: &str,
    clients: &Clients,
) -> Result<Provisioned, ProvisionError> {
    let mut provisioned = Provisioned::default();
    provision_queues(template, stack, clients, &mut provisioned).await?;
    provision_tables(template, stack, clients, &mut provisioned).await?;
    for (id, bucket) in template.resources("AWS::S3::Bucket") {
        let bucket_name = name(&bucket["Properties"]["BucketName"], stack, id)?;
        let created = clients.s3.create_bucket().bucket(&bucket_name).send().await;
        if let Err(e) = created {
            let owned = e.as_service_error().is_some_and(|e| {
                e.is_bucket_already_owned_by_you() || e.is_bucket_already_exists()
            });
            if !owned {
                return Err(endpoint(format!("CreateBucket {bucket_name}"))(e));
            }
        }
        provisioned
            .arns
            .insert(id.to_owned(), format!("arn:aws:s3:::{bucket_name}"));
        provisioned.refs.insert(id.to_owned(), bucket_name);
    }
    Ok(provisioned)
}

async fn provision_queues(
    template: &Template,
    stack: &str,
    clients: &Clients,
    provisioned: &mut Provisioned,
) -> Result<(), ProvisionError> {
    let queues = template.resources("AWS::SQS::Queue");
    // First every queue, then the redrive policies, which name other queues' ARNs.
    for (id, queue) in &queues {
        let properties = &queue["Properties"];
        let queue_name = name(&properties["QueueName"], stack, id)?;
        let mut request = clients.sqs.create_queue().queue_name(&queue_name);
        for (property, attribute) in [
            ("VisibilityTimeout", QueueAttributeName::VisibilityTimeout),
            (
                "MessageRetentionPeriod",
                QueueAttributeName::MessageRetentionPeriod,
            ),
            ("DelaySeconds", QueueAttributeName::DelaySeconds),
        ] {
            if let Some(value) = template.number(&properties[property]) {
                request = request.attributes(attribute, (value as u64).to_string());
            }
        }
        if properties["FifoQueue"].as_bool() == Some(true) {
            request = request.attributes(QueueAttributeName::FifoQueue, "true");
        }
        let url = request
            .send()
            .await
            .map_err(endpoint(format!("CreateQueue {queue_name}")))?
            .queue_url
            .unwrap_or_default();
        let arn = clients
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(endpoint(format!("GetQueueAttributes {queue_name}")))?
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .unwrap_or_default();
        provisioned.refs.insert((*id).to_owned(), url);
        provisioned.arns.insert((*id).to_owned(), arn);
    }
    for (id, queue) in &queues {
        let redrive = &queue["Properties"]["RedrivePolicy"];
        if redrive.is_null() {
            continue;
        }
        let target = get_att(&redrive["deadLetterTargetArn"])
            .and_then(|(dlq, _)| provisioned.arn(dlq))
            .ok_or_else(|| {
                TemplateError::Unsupported(format!(
                    "{id}: deadLetterTargetArn must be !GetAtt Queue.Arn"
                ))
            })?;
        let max_receive_count = template
            .number(&redrive["maxReceiveCount"])
            .ok_or_else(|| TemplateError::Unsupported(format!("{id}: maxReceiveCount")))?;
        let policy = serde_json::json!({
            "deadLetterTargetArn": target,
            "maxReceiveCount": max_receive_count as u64,
        });
        clients
            .sqs
            .set_queue_attributes()
            .queue_url(provisioned.reference(id).unwrap_or_default())
            .attributes(QueueAttributeName::RedrivePolicy, policy.to_string())
            .send()
            .await
            .map_err(endpoint(format!("SetQueueAttributes {id}")))?;
    }
    Ok(())
}

async fn provision_tables(
    template: &Template,
    stack: &str,
    clients: &Clients,
    provisioned: &mut Provisioned,
) -> Result<(), ProvisionError> {
    for (id, table) in template.resources("AWS::DynamoDB::Table") {
        let properties = &table["Properties"];
        let table_name = name(&properties["TableName"], stack, id)?;
        let mut request = clients
            .dynamodb
            .create_table()
            .table_name(&table_name)
            .billing_mode(BillingMode::PayPerRequest);
        for definition in properties["AttributeDefinitions"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let kind = match definition["AttributeType"].as_str() {
                Some("N") => ScalarAttributeType::N,
                Some("B") => ScalarAttributeType::B,
                _ => ScalarAttributeType::S,
            };
            let definition = AttributeDefinition::builder()
                .attribute_name(definition["AttributeName"].as_str().unwrap_or_default())
                .attribute_type(kind)
                .build()
                .map_err(endpoint(format!("{id}: attribute definition")))?;
            request = request.attribute_definitions(definition);
        }
        for key in properties["KeySchema"].as_sequence().into_iter().flatten() {
            let kind = if key["KeyType"].as_str() == Some("RANGE") {
                KeyType::Range
            } else {
                KeyType::Hash
            };
            let key = KeySchemaElement::builder()
                .attribute_name(key["AttributeName"].as_str().unwrap_or_default())
                .key_type(kind)
                .build()
                .map_err(endpoint(format!("{id}: key schema")))?;
            request = request.key_schema(key);
        }
        match request.send().await {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) => {}
            Err(e) => return Err(endpoint(format!("CreateTable {table_name}"))(e)),
        }
        let ttl = &properties["TimeToLiveSpecification"];
        if ttl["Enabled"].as_bool() == Some(true) {
            let specification = TimeToLiveSpecification::builder()
                .attribute_name(ttl["AttributeName"].as_str().unwrap_or_default())
                .enabled(true)
                .build()
                .map_err(endpoint(format!("{id}: TTL")))?;
            // Enabling TTL again is refused; that it is on is all that matters.
            let _ = clients
                .dynamodb
                .update_time_to_live()
                .table_name(&table_name)
                .time_to_live_specification(specification)
                .send()
                .await;
        }
        let arn = clients
            .dynamodb
            .describe_table()
            .table_name(&table_name)
            .send()
            .await
            .map_err(endpoint(format!("DescribeTable {table_name}")))?
            .table
            .and_then(|t| t.table_arn)
            .unwrap_or_default();
        provisioned.arns.insert(id.to_owned(), arn);
        provisioned.refs.insert(id.to_owned(), table_name);
    }
    Ok(())
}
