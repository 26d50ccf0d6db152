//! Finding the job queue and its dead-letter queue.

use aws_sdk_sqs::types::QueueAttributeName;

use crate::OpsError;

/// Where the queues come from.
#[derive(Debug, Clone)]
pub enum Target {
    /// A deployed stack: its `JobQueueUrl` and `DeadLetterQueueUrl` outputs.
    Stack(String),
    /// A local pipeline provisioned by `local-runner` under this stack prefix: queues named
    /// `<prefix>-jobqueue` and `<prefix>-deadletterqueue`.
    Local(String),
    /// Explicit queue URLs.
    Urls {
        /// The job queue.
        queue: String,
        /// Its dead-letter queue.
        dlq: String,
    },
}

/// The job queue and its dead-letter queue, by URL and ARN.
#[derive(Debug, Clone)]
pub struct Queues {
    /// The job queue's URL.
    pub queue_url: String,
    /// The job queue's ARN.
    pub queue_arn: String,
    /// The dead-letter queue's URL.
    pub dlq_url: String,
    /// The dead-letter queue's ARN.
    pub dlq_arn: String,
}

impl Queues {
    /// Resolves `target` to the two queues, checking that both exist.
    pub async fn resolve(
        target: &Target,
        sqs: &aws_sdk_sqs::Client,
        cloudformation: &aws_sdk_cloudformation::Client,
    ) -> Result<Self, OpsError> {
        let (queue_url, dlq_url) = match target {
            Target::Stack(stack) => stack_outputs(cloudformation, stack).await?,
            Target::Local(prefix) => (
                queue_url(sqs, &format!("{prefix}-jobqueue")).await?,
                queue_url(sqs, &format!("{prefix}-deadletterqueue")).await?,
            ),
            Target::Urls { queue, dlq } => (queue.clone(), dlq.clone()),
        };
        Ok(Self {
            queue_arn: queue_arn(sqs, &queue_url).await?,
            dlq_arn: queue_arn(sqs, &dlq_url).await?,
            queue_url,
            dlq_url,
        })
    }
}

async fn stack_outputs(
    cloudformation: &aws_sdk_cloudformation::Client,
    stack: &str,
) -> Result<(String, String), OpsError> {
    let described = cloudformation
        .describe_stacks()
        .stack_name(stack)
        .send()
        .await
        .map_err(|e| {
            let error = OpsError::from_sdk(
                &format!("reading stack {stack}"),
                "cloudformation:DescribeStacks",
                e,
            );
            match error {
                OpsError::Service { detail, .. } if detail.contains("does not exist") => {
                    OpsError::NotFound(format!(
                        "stack {stack} does not exist in this account and region"
                    ))
                }
                other => other,
            }
        })?;
    let outputs = described
        .stacks()
        .first()
        .map(|s| s.outputs().to_vec())
        .unwrap_or_default();
    let output = |key: &str| {
        outputs
            .iter()
            .find(|o| o.output_key() == Some(key))
            .and_then(|o| o.output_value())
            .map(str::to_owned)
            .ok_or_else(|| {
                OpsError::NotFound(format!(
                    "stack {stack} has no output {key}: is it this project's stack?"
                ))
            })
    };
    Ok((output("JobQueueUrl")?, output("DeadLetterQueueUrl")?))
}

async fn queue_url(sqs: &aws_sdk_sqs::Client, name: &str) -> Result<String, OpsError> {
    sqs.get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| OpsError::from_sdk(&format!("finding queue {name}"), "sqs:GetQueueUrl", e))?
        .queue_url
        .ok_or_else(|| OpsError::NotFound(format!("queue {name} has no URL")))
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String, OpsError> {
    queue_attributes(sqs, url, &[QueueAttributeName::QueueArn])
        .await?
        .remove(&QueueAttributeName::QueueArn)
        .ok_or_else(|| OpsError::NotFound(format!("queue {url} has no ARN")))
}

/// The queue's attributes `names` (absent ones are missing from the map).
pub(crate) async fn queue_attributes(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    names: &[QueueAttributeName],
) -> Result<std::collections::HashMap<QueueAttributeName, String>, OpsError> {
    Ok(sqs
        .get_queue_attributes()
        .queue_url(url)
        .set_attribute_names(Some(names.to_vec()))
        .send()
        .await
        .map_err(|e| {
            OpsError::from_sdk(&format!("reading queue {url}"), "sqs:GetQueueAttributes", e)
        })?
        .attributes
        .unwrap_or_default())
}
