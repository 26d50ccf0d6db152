//! Finding a worker's queue and its dead-letter queue, in any stack of this template.
//!
//! A worker's queue is a queue with a redrive policy; its dead-letter queue is the one the
//! policy names. So nothing here knows a worker: a stack (or a local pipeline) with one such
//! queue needs no choice, one with several takes the queue's logical id from the template
//! (`--queue NotifierQueue`), and an unknown or missing choice lists the ones there are.

use aws_sdk_cloudformation::types::StackResourceSummary;
use aws_sdk_sqs::types::QueueAttributeName;

use crate::OpsError;

/// Where the queues come from.
#[derive(Debug, Clone)]
pub enum Target {
    /// A deployed stack: its queue resources (`AWS::SQS::Queue`), by logical id.
    Stack {
        /// The stack's name.
        stack: String,
        /// The worker's queue, by its logical id in the template; `None` when the stack has
        /// only one queue with a dead-letter queue.
        queue: Option<String>,
    },
    /// A local pipeline provisioned by `local-runner` under this stack prefix, which names
    /// each queue `<prefix>-<logical id in lowercase>`.
    Local {
        /// The prefix (`local-runner --stack`).
        prefix: String,
        /// As for a stack.
        queue: Option<String>,
    },
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

/// A queue that may be a worker's: its logical id (a stack's) or name (a local pipeline's),
/// and its URL.
struct Candidate {
    name: String,
    url: String,
}

impl Queues {
    /// Resolves `target` to the two queues, checking that both exist.
    pub async fn resolve(
        target: &Target,
        sqs: &aws_sdk_sqs::Client,
        cloudformation: &aws_sdk_cloudformation::Client,
    ) -> Result<Self, OpsError> {
        let (queue_url, dlq_url) = match target {
            Target::Stack { stack, queue } => {
                let candidates = stack_queues(cloudformation, stack).await?;
                let wanted = |c: &Candidate| queue.as_deref().is_none_or(|q| c.name == q);
                worker_queue(sqs, candidates, wanted, &format!("stack {stack}"), queue).await?
            }
            Target::Local { prefix, queue } => {
                let candidates = local_queues(sqs, prefix).await?;
                let name = queue
                    .as_deref()
                    .map(|q| format!("{prefix}-{}", q.to_lowercase()));
                let wanted = |c: &Candidate| name.as_deref().is_none_or(|n| c.name == n);
                let place = format!("the local pipeline {prefix}");
                worker_queue(sqs, candidates, wanted, &place, queue).await?
            }
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

/// Of `candidates`, the one queue `wanted` that has a dead-letter queue, and that queue's URL.
async fn worker_queue(
    sqs: &aws_sdk_sqs::Client,
    candidates: Vec<Candidate>,
    wanted: impl Fn(&Candidate) -> bool,
    place: &str,
    asked: &Option<String>,
) -> Result<(String, String), OpsError> {
    let mut workers = Vec::new();
    for candidate in candidates {
        if let Some(dlq_arn) = dead_letter_target(sqs, &candidate.url).await? {
            workers.push((candidate, dlq_arn));
        }
    }
    let names = || {
        let names: Vec<&str> = workers.iter().map(|(c, _)| c.name.as_str()).collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    let chosen: Vec<&(Candidate, String)> = workers.iter().filter(|(c, _)| wanted(c)).collect();
    match (chosen.as_slice(), asked) {
        ([(queue, dlq_arn)], _) => Ok((queue.url.clone(), url_of_arn(sqs, dlq_arn).await?)),
        ([], Some(asked)) => Err(OpsError::NotFound(format!(
            "{place} has no queue {asked} with a dead-letter queue; it has: {}",
            names()
        ))),
        ([], None) => Err(OpsError::NotFound(format!(
            "{place} has no queue with a dead-letter queue"
        ))),
        (_, _) => Err(OpsError::NotFound(format!(
            "{place} has several queues with a dead-letter queue ({}): say which with --queue",
            names()
        ))),
    }
}

/// The stack's queues, by logical id.
async fn stack_queues(
    cloudformation: &aws_sdk_cloudformation::Client,
    stack: &str,
) -> Result<Vec<Candidate>, OpsError> {
    let mut pages = cloudformation
        .list_stack_resources()
        .stack_name(stack)
        .into_paginator()
        .items()
        .send();
    let mut queues = Vec::new();
    while let Some(resource) = pages.next().await {
        let resource: StackResourceSummary = resource.map_err(|e| {
            let error = OpsError::from_sdk(
                &format!("reading stack {stack}"),
                "cloudformation:ListStackResources",
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
        if resource.resource_type() == Some("AWS::SQS::Queue")
            && let (Some(name), Some(url)) = (
                resource.logical_resource_id(),
                resource.physical_resource_id(),
            )
        {
            queues.push(Candidate {
                name: name.to_owned(),
                url: url.to_owned(),
            });
        }
    }
    Ok(queues)
}

/// The queues named `<prefix>-...`, by name.
async fn local_queues(sqs: &aws_sdk_sqs::Client, prefix: &str) -> Result<Vec<Candidate>, OpsError> {
    let listed = sqs
        .list_queues()
        .queue_name_prefix(format!("{prefix}-"))
        .send()
        .await
        .map_err(|e| {
            OpsError::from_sdk(&format!("listing queues {prefix}-*"), "sqs:ListQueues", e)
        })?;
    Ok(listed
        .queue_urls()
        .iter()
        .filter_map(|url| {
            let name = url.rsplit('/').next()?;
            Some(Candidate {
                name: name.to_owned(),
                url: url.clone(),
            })
        })
        .collect())
}

/// The ARN of the dead-letter queue `url`'s redrive policy names, if it has one.
async fn dead_letter_target(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> Result<Option<String>, OpsError> {
    let policy = queue_attributes(sqs, url, &[QueueAttributeName::RedrivePolicy])
        .await?
        .remove(&QueueAttributeName::RedrivePolicy);
    Ok(policy.and_then(|policy| {
        let policy: serde_json::Value = serde_json::from_str(&policy).ok()?;
        Some(policy["deadLetterTargetArn"].as_str()?.to_owned())
    }))
}

/// The URL of the queue `arn` (`arn:<partition>:sqs:<region>:<account>:<name>`).
async fn url_of_arn(sqs: &aws_sdk_sqs::Client, arn: &str) -> Result<String, OpsError> {
    let mut parts = arn.rsplitn(3, ':');
    let (Some(name), Some(account)) = (parts.next(), parts.next()) else {
        return Err(OpsError::NotFound(format!("{arn} is not a queue's ARN")));
    };
    sqs.get_queue_url()
        .queue_name(name)
        .queue_owner_aws_account_id(account)
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
