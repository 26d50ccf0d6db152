//! The operator CLI's library against a real SQS endpoint: listing consumes nothing, the safe
//! move loop moves every parked message back (also when killed half-way), the class filter,
//! SQS's native move task where the backend has it, and clear errors.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use harness::{TestQueue, sdk_config, unique_name};
use queue_ops::redrive::{self, LoopOptions};
use queue_ops::stats::queue_stats;
use queue_ops::{OpsError, Queues, Target, dlq};
use queue_worker::batch::{ParkReason, QueueActions, SqsQueueActions, dlq_attributes};
use queue_worker::job;

/// A job queue whose dead-letter queue is `dlq` (redrive after 5 receives), as the template
/// makes them.
async fn queues(sqs: &aws_sdk_sqs::Client, prefix: &str) -> Queues {
    let dlq = TestQueue::create(sqs, &format!("{prefix}-deadletterqueue"), &[]).await;
    let policy = format!(
        r#"{{"deadLetterTargetArn":"{}","maxReceiveCount":"5"}}"#,
        dlq.arn
    );
    let queue = TestQueue::create(
        sqs,
        &format!("{prefix}-jobqueue"),
        &[(QueueAttributeName::RedrivePolicy, policy.as_str())],
    )
    .await;
    Queues {
        queue_url: queue.url,
        queue_arn: queue.arn,
        dlq_url: dlq.url,
        dlq_arn: dlq.arn,
    }
}

/// Sends `count` jobs to the job queue, receives them as the processor would, parks them with
/// `class` through the batch processor's own parking code, and deletes the originals. Returns
/// the bodies.
async fn park(
    sqs: &aws_sdk_sqs::Client,
    queues: &Queues,
    count: usize,
    class: &str,
) -> Vec<String> {
    let job_queue = TestQueue {
        url: queues.queue_url.clone(),
        arn: queues.queue_arn.clone(),
    };
    let bodies: Vec<String> = (0..count)
        .map(|i| format!(r#"{{"id":"{}","n":{i}}}"#, unique_name(class)))
        .collect();
    for body in &bodies {
        let job_id = body.split('"').nth(3).expect("job id").to_owned();
        sqs.send_message()
            .queue_url(&queues.queue_url)
            .message_body(body)
            .message_attributes(
                job::attributes::JOB_ID,
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(job_id)
                    .build()
                    .expect("attribute"),
            )
            .send()
            .await
            .expect("send job");
    }
    let actions = SqsQueueActions::new(sqs.clone(), &queues.dlq_url);
    let mut parked = 0;
    while parked < count {
        let event = job_queue
            .receive_event(sqs, 10, Duration::from_secs(1))
            .await;
        for message in &event.records {
            actions
                .park(
                    message,
                    ParkReason {
                        code: class,
                        reason: "the test parked it",
                    },
                )
                .await
                .expect("park");
            sqs.delete_message()
                .queue_url(&queues.queue_url)
                .receipt_handle(message.receipt_handle.as_deref().expect("handle"))
                .send()
                .await
                .expect("delete original");
            parked += 1;
        }
    }
    bodies
}

/// Every message in the queue at `url`, deleted as read: body -> attributes, with a count per
/// body (duplicates show as counts above 1).
async fn drain(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> HashMap<String, (usize, HashMap<String, MessageAttributeValue>)> {
    let mut seen: HashMap<String, (usize, HashMap<String, MessageAttributeValue>)> = HashMap::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .expect("receive");
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            return seen;
        }
        for message in messages {
            let entry = seen
                .entry(message.body().unwrap_or_default().to_owned())
                .or_insert_with(|| (0, message.message_attributes().cloned().unwrap_or_default()));
            entry.0 += 1;
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(message.receipt_handle().expect("handle"))
                .send()
                .await
                .expect("delete");
        }
    }
}

/// Waits until no message of the queue at `url` is in flight (held invisible).
async fn until_nothing_in_flight(sqs: &aws_sdk_sqs::Client, url: &str) {
    for _ in 0..300 {
        if queue_stats(sqs, None, url).await.expect("stats").in_flight == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("messages stayed in flight in {url}");
}

#[tokio::test]
async fn dlq_list_shows_every_reason_and_consumes_nothing() {
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let queues = queues(&sqs, "ops-list").await;
    park(&sqs, &queues, 8, "malformed_job").await;
    park(&sqs, &queues, 4, "object_missing").await;

    let listed = dlq::list(&sqs, &queues.dlq_url, 100, Duration::from_secs(30))
        .await
        .expect("list");

    assert_eq!(listed.len(), 12);
    let classes = listed.iter().fold(HashMap::new(), |mut by, m| {
        *by.entry(m.error_class.as_str()).or_insert(0) += 1;
        by
    });
    assert_eq!(
        classes,
        HashMap::from([("malformed_job", 8), ("object_missing", 4)])
    );
    assert!(
        listed.iter().all(|m| m.reason == "the test parked it"
            && m.receive_count == 1
            && m.job_id.is_some())
    );
    let after = queue_stats(&sqs, None, &queues.dlq_url)
        .await
        .expect("stats");
    assert_eq!(
        (after.depth, after.in_flight),
        (12, 0),
        "list must leave the DLQ as it was"
    );
}

#[tokio::test]
async fn move_loop_moves_every_message_back_once_without_the_dlq_attributes() {
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let queues = queues(&sqs, "ops-loop").await;
    let bodies = park(&sqs, &queues, 25, "dependency_down").await;

    let options = LoopOptions {
        class: None,
        rate: None,
        hold: Duration::from_secs(30),
    };
    let report = redrive::move_loop(&sqs, &queues, &options, |_| {})
        .await
        .expect("move");

    assert_eq!((report.moved, report.skipped), (25, 0));
    let moved = drain(&sqs, &queues.queue_url).await;
    assert_eq!(moved.len(), 25);
    for body in &bodies {
        let (count, attributes) = moved.get(body).expect("every parked message is back");
        assert_eq!(*count, 1, "moved exactly once");
        assert!(
            attributes.contains_key(job::attributes::JOB_ID),
            "original attributes kept"
        );
        assert!(
            dlq_attributes::ALL
                .iter()
                .all(|a| !attributes.contains_key(*a)),
            "dlq.* attributes removed: {attributes:?}"
        );
    }
    assert!(drain(&sqs, &queues.dlq_url).await.is_empty());
}

/// A FIFO job queue whose FIFO dead-letter queue takes messages after 5 receives.
async fn fifo_queues(sqs: &aws_sdk_sqs::Client, prefix: &str) -> Queues {
    let create = |name: String, attributes: Vec<(QueueAttributeName, String)>| async move {
        let url = sqs
            .create_queue()
            .queue_name(format!("{name}.fifo"))
            .set_attributes(Some(
                attributes
                    .into_iter()
                    .chain([(QueueAttributeName::FifoQueue, "true".to_owned())])
                    .collect(),
            ))
            .send()
            .await
            .unwrap_or_else(|e| panic!("create FIFO queue {name}: {e:?}"))
            .queue_url
            .expect("queue url");
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .expect("queue arn");
        (url, arn)
    };
    let (dlq_url, dlq_arn) = create(unique_name(&format!("{prefix}-dlq")), Vec::new()).await;
    let policy = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"5"}}"#);
    let (queue_url, queue_arn) = create(
        unique_name(&format!("{prefix}-jobs")),
        vec![(QueueAttributeName::RedrivePolicy, policy)],
    )
    .await;
    Queues {
        queue_url,
        queue_arn,
        dlq_url,
        dlq_arn,
    }
}

#[tokio::test]
async fn move_loop_sends_back_into_a_fifo_queue_in_the_original_groups() {
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let queues = fifo_queues(&sqs, "ops-fifo").await;
    let job_queue = TestQueue {
        url: queues.queue_url.clone(),
        arn: queues.queue_arn.clone(),
    };
    // Two groups of jobs, parked by the processor's own code (in their groups, as a FIFO
    // source's DLQ is FIFO too), originals deleted.
    let jobs: Vec<(String, String)> = (0..6)
        .map(|i| {
            (
                format!("group-{}", i % 2),
                unique_name(&format!("fifo-job-{i}")),
            )
        })
        .collect();
    for (group, body) in &jobs {
        sqs.send_message()
            .queue_url(&queues.queue_url)
            .message_body(body)
            .message_group_id(group)
            .message_deduplication_id(body)
            .send()
            .await
            .expect("send job");
    }
    let actions = SqsQueueActions::new(sqs.clone(), &queues.dlq_url);
    let mut parked = 0;
    for _ in 0..20 {
        if parked == jobs.len() {
            break;
        }
        let event = job_queue
            .receive_event(&sqs, 10, Duration::from_secs(1))
            .await;
        for message in &event.records {
            let why = ParkReason {
                code: "dependency_down",
                reason: "the test parked it",
            };
            actions.park(message, why).await.expect("park");
            sqs.delete_message()
                .queue_url(&queues.queue_url)
                .receipt_handle(message.receipt_handle.as_deref().expect("handle"))
                .send()
                .await
                .expect("delete original");
            parked += 1;
        }
    }
    assert_eq!(parked, jobs.len());

    let options = LoopOptions {
        class: None,
        rate: None,
        hold: Duration::from_secs(30),
    };
    let report = redrive::move_loop(&sqs, &queues, &options, |_| {})
        .await
        .expect("move into the FIFO queue");
    assert_eq!((report.moved, report.skipped), (6, 0));

    // Every job is back once, in its group, and each group in its original order.
    let mut back: Vec<(String, String)> = Vec::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&queues.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .send()
            .await
            .expect("receive");
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for message in messages {
            let group = message
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                .cloned()
                .unwrap_or_default();
            back.push((group, message.body().unwrap_or_default().to_owned()));
            sqs.delete_message()
                .queue_url(&queues.queue_url)
                .receipt_handle(message.receipt_handle().expect("handle"))
                .send()
                .await
                .expect("delete");
        }
    }
    for group in ["group-0", "group-1"] {
        let sent: Vec<&String> = jobs
            .iter()
            .filter(|(g, _)| g == group)
            .map(|(_, b)| b)
            .collect();
        let returned: Vec<&String> = back
            .iter()
            .filter(|(g, _)| g == group)
            .map(|(_, b)| b)
            .collect();
        assert_eq!(returned, sent, "{group} comes back whole, once, in order");
    }
    assert_eq!(back.len(), jobs.len());
    assert!(drain(&sqs, &queues.dlq_url).await.is_empty());
}

/// Sends one job to the job queue and receives it twice, as two concurrent deliveries of one
/// message (SQS delivers at least once): the same message id, two receipt handles.
async fn delivered_twice(
    sqs: &aws_sdk_sqs::Client,
    queues: &Queues,
    fifo: bool,
) -> Vec<aws_lambda_events::event::sqs::SqsMessage> {
    let mut send = sqs
        .send_message()
        .queue_url(&queues.queue_url)
        .message_body(unique_name("poison"));
    if fifo {
        send = send
            .message_group_id("import-7")
            .message_deduplication_id(unique_name("send"));
    }
    send.send().await.expect("send job");
    let mut deliveries = Vec::new();
    for _ in 0..20 {
        if deliveries.len() == 2 {
            break;
        }
        let received = sqs
            .receive_message()
            .queue_url(&queues.queue_url)
            .visibility_timeout(0)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive");
        let event = local_runner::esm::lambda_event(received.messages(), &queues.queue_arn);
        deliveries.extend(event.records);
    }
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[0].message_id, deliveries[1].message_id);
    deliveries
}

#[tokio::test]
async fn a_poison_message_delivered_twice_is_parked_once_in_a_fifo_dlq_and_twice_in_a_standard_one()
{
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let why = ParkReason {
        code: "malformed_job",
        reason: "the test parked it",
    };
    for (fifo, copies) in [(true, 1), (false, 2)] {
        let queues = if fifo {
            fifo_queues(&sqs, "ops-park-fifo").await
        } else {
            queues(&sqs, "ops-park").await
        };
        let actions = SqsQueueActions::new(sqs.clone(), &queues.dlq_url);
        for delivery in delivered_twice(&sqs, &queues, fifo).await {
            actions.park(&delivery, why).await.expect("park");
        }
        let parked = dlq::list(&sqs, &queues.dlq_url, 10, Duration::from_secs(30))
            .await
            .expect("list");
        assert_eq!(parked.len(), copies, "fifo: {fifo}");
    }
}

#[tokio::test]
async fn move_loop_with_a_class_moves_only_that_class() {
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let queues = queues(&sqs, "ops-class").await;
    let wanted = park(&sqs, &queues, 6, "dependency_down").await;
    park(&sqs, &queues, 4, "malformed_job").await;

    let options = LoopOptions {
        class: Some("dependency_down".into()),
        rate: None,
        hold: Duration::from_secs(30),
    };
    let report = redrive::move_loop(&sqs, &queues, &options, |_| {})
        .await
        .expect("move");

    assert_eq!((report.moved, report.skipped), (6, 4));
    let moved = drain(&sqs, &queues.queue_url).await;
    assert_eq!(
        moved.keys().collect::<std::collections::HashSet<_>>(),
        wanted.iter().collect()
    );
    let left = queue_stats(&sqs, None, &queues.dlq_url)
        .await
        .expect("stats");
    assert_eq!(
        (left.depth, left.in_flight),
        (4, 0),
        "the other class is left, visible"
    );
}

#[tokio::test]
async fn move_loop_killed_half_way_and_restarted_loses_nothing() {
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let queues = queues(&sqs, "ops-kill").await;
    let bodies = park(&sqs, &queues, 40, "dependency_down").await;
    let options = LoopOptions {
        class: None,
        rate: Some(20),
        hold: Duration::from_secs(2),
    };

    // Kill the first run once part of the DLQ has moved: wherever it stops (between a send
    // and its delete, say), nothing may be lost.
    let first = tokio::spawn({
        let (sqs, queues, options) = (sqs.clone(), queues.clone(), options.clone());
        async move { redrive::move_loop(&sqs, &queues, &options, |_| {}).await }
    });
    loop {
        let arrived = queue_stats(&sqs, None, &queues.queue_url)
            .await
            .expect("stats");
        if arrived.depth >= 10 {
            break;
        }
        assert!(
            !first.is_finished(),
            "the first run ended before it was killed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.abort();
    assert!(first.await.is_err_and(|e| e.is_cancelled()));
    let remaining = queue_stats(&sqs, None, &queues.dlq_url)
        .await
        .expect("stats");
    assert!(
        remaining.depth + remaining.in_flight > 0,
        "killed half-way, not at the end"
    );

    // What the killed run held becomes visible after its hold; then a second run finishes.
    until_nothing_in_flight(&sqs, &queues.dlq_url).await;
    redrive::move_loop(&sqs, &queues, &options, |_| {})
        .await
        .expect("second run");

    let moved = drain(&sqs, &queues.queue_url).await;
    for body in &bodies {
        assert!(
            moved.contains_key(body),
            "a parked message was lost: {body}"
        );
    }
    assert_eq!(
        moved.len(),
        bodies.len(),
        "nothing but the parked messages arrived"
    );
    assert!(
        drain(&sqs, &queues.dlq_url).await.is_empty(),
        "the DLQ is empty"
    );
}

/// SQS's own move task where the backend has it (LocalStack; `make test-localstack` sets
/// EXPECT_MESSAGE_MOVE_TASK=1): every message back exactly once. Where it lacks it (moto), the
/// start must fail as `Unsupported`, which is what makes `dlq redrive` fall back to the loop.
#[tokio::test]
async fn native_redrive_moves_every_message_back_exactly_once_or_reports_unsupported() {
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let queues = queues(&sqs, "ops-native").await;
    let bodies = park(&sqs, &queues, 15, "dependency_down").await;
    let expected = std::env::var("EXPECT_MESSAGE_MOVE_TASK").is_ok_and(|v| v == "1");

    match redrive::start_native(&sqs, &queues, Some(50)).await {
        Ok(_) => {
            let mut task = None;
            for _ in 0..600 {
                task = redrive::native_progress(&sqs, &queues)
                    .await
                    .expect("progress");
                if task.as_ref().is_some_and(|t| t.finished()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let task = task.expect("a task is listed");
            assert_eq!(task.status, "COMPLETED", "{task:?}");
            let moved = drain(&sqs, &queues.queue_url).await;
            assert_eq!(moved.len(), bodies.len());
            for body in &bodies {
                assert_eq!(
                    moved.get(body).map(|(n, _)| *n),
                    Some(1),
                    "exactly once: {body}"
                );
            }
            assert!(drain(&sqs, &queues.dlq_url).await.is_empty());
        }
        Err(OpsError::Unsupported { .. }) if !expected => {
            let left = queue_stats(&sqs, None, &queues.dlq_url)
                .await
                .expect("stats");
            assert_eq!(left.depth, 15, "a failed start moves nothing");
        }
        Err(other) => panic!("unexpected: {other} (expected the move task: {expected})"),
    }
}

/// The SDK configuration, and SQS and CloudFormation clients: CloudFormation comes from the
/// emulator (moto) in every tier, never from AWS.
async fn clients() -> (
    aws_config::SdkConfig,
    aws_sdk_sqs::Client,
    aws_sdk_cloudformation::Client,
) {
    let config = sdk_config().await;
    let cloudformation = aws_sdk_cloudformation::Client::from_conf(
        aws_sdk_cloudformation::config::Builder::from(&config)
            .endpoint_url(moto())
            .build(),
    );
    (
        config.clone(),
        aws_sdk_sqs::Client::new(&config),
        cloudformation,
    )
}

/// The emulator's endpoint (in the LocalStack tier, DynamoDB's: the emulator's).
fn moto() -> String {
    std::env::var("AWS_ENDPOINT_URL")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL_DYNAMODB"))
        .expect("an emulator endpoint")
}

/// Creates `<prefix>-<queue>` with the dead-letter queue `<prefix>-<dlq>`, named exactly as
/// the local runner names a template's queues; returns both URLs.
async fn named_worker_queue(
    sqs: &aws_sdk_sqs::Client,
    prefix: &str,
    queue: &str,
    dlq: &str,
) -> (String, String) {
    let create = |name: String, attributes: HashMap<QueueAttributeName, String>| async move {
        sqs.create_queue()
            .queue_name(&name)
            .set_attributes(Some(attributes))
            .send()
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e:?}"))
            .queue_url
            .expect("a queue URL")
    };
    let dlq_url = create(format!("{prefix}-{dlq}"), HashMap::new()).await;
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("the DLQ's ARN")
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .expect("an ARN");
    let policy = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"5"}}"#);
    let queue_url = create(
        format!("{prefix}-{queue}"),
        HashMap::from([(QueueAttributeName::RedrivePolicy, policy)]),
    )
    .await;
    (queue_url, dlq_url)
}

#[tokio::test]
async fn a_stacks_worker_queue_is_found_by_its_logical_id_and_its_redrive_policy() {
    let (config, _, cloudformation) = clients().await;
    // The stack's queues are where its CloudFormation made them: on the emulator, also in the
    // LocalStack tier (whose SQS is LocalStack's).
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&config)
            .endpoint_url(moto())
            .build(),
    );
    // Two workers' queues with their DLQs, and a queue without one.
    let stack = unique_name("ops-stack");
    let queue = |dlq: Option<&str>| match dlq {
        Some(dlq) => serde_json::json!({"Type": "AWS::SQS::Queue", "Properties": {
            "RedrivePolicy": {"deadLetterTargetArn": {"Fn::GetAtt": [dlq, "Arn"]}, "maxReceiveCount": 5}}}),
        None => serde_json::json!({"Type": "AWS::SQS::Queue"}),
    };
    let template = serde_json::json!({"Resources": {
        "JobQueue": queue(Some("DeadLetterQueue")), "DeadLetterQueue": queue(None),
        "NotifierQueue": queue(Some("NotifierDeadLetterQueue")),
        "NotifierDeadLetterQueue": queue(None), "Scratch": queue(None),
    }});
    cloudformation
        .create_stack()
        .stack_name(&stack)
        .template_body(template.to_string())
        .send()
        .await
        .expect("create the stack");
    let target = |queue: Option<&str>| Target::Stack {
        stack: stack.clone(),
        queue: queue.map(str::to_owned),
    };
    let physical = |logical: &'static str| {
        let cloudformation = cloudformation.clone();
        let stack = stack.clone();
        async move {
            cloudformation
                .describe_stack_resource()
                .stack_name(stack)
                .logical_resource_id(logical)
                .send()
                .await
                .expect("the resource")
                .stack_resource_detail
                .and_then(|d| d.physical_resource_id)
                .expect("its physical id")
        }
    };

    let notifier = Queues::resolve(&target(Some("NotifierQueue")), &sqs, &cloudformation)
        .await
        .expect("the notifier's queue");
    // The same queues by name (an emulator's URLs may name another host than its stack's).
    let name = |url: &str| url.rsplit('/').next().unwrap_or_default().to_owned();
    assert_eq!(
        (name(&notifier.queue_url), name(&notifier.dlq_url)),
        (
            name(&physical("NotifierQueue").await),
            name(&physical("NotifierDeadLetterQueue").await)
        )
    );
    let ambiguous = Queues::resolve(&target(None), &sqs, &cloudformation)
        .await
        .expect_err("two workers");
    assert!(
        matches!(&ambiguous, OpsError::NotFound(m)
            if m.contains("JobQueue, NotifierQueue") && m.contains("--queue")),
        "{ambiguous}"
    );
}

#[tokio::test]
async fn queues_resolve_by_local_name_and_errors_say_what_is_wrong() {
    let (config, sqs, cloudformation) = clients().await;
    // The names the local runner gives the template's queues: one worker's queue and its DLQ.
    let prefix = unique_name("ops-local");
    let local = |queue: Option<&str>| Target::Local {
        prefix: prefix.clone(),
        queue: queue.map(str::to_owned),
    };
    let (jobs, jobs_dlq) = named_worker_queue(&sqs, &prefix, "jobqueue", "deadletterqueue").await;

    let found = Queues::resolve(&local(None), &sqs, &cloudformation)
        .await
        .expect("the only queue with a dead-letter queue, without naming it");
    assert_eq!(
        (found.queue_url.as_str(), found.dlq_url.as_str()),
        (jobs.as_str(), jobs_dlq.as_str())
    );

    // A second worker: its queue must now be named, by its logical id.
    let (notifier, notifier_dlq) =
        named_worker_queue(&sqs, &prefix, "notifierqueue", "notifierdeadletterqueue").await;
    let ambiguous = Queues::resolve(&local(None), &sqs, &cloudformation)
        .await
        .expect_err("two queues with a dead-letter queue");
    assert!(
        matches!(&ambiguous, OpsError::NotFound(m) if m.contains("--queue")
            && m.contains(&format!("{prefix}-jobqueue"))
            && m.contains(&format!("{prefix}-notifierqueue"))),
        "{ambiguous}"
    );
    let named = Queues::resolve(&local(Some("NotifierQueue")), &sqs, &cloudformation)
        .await
        .expect("the queue named by its logical id");
    assert_eq!(
        (named.queue_url.as_str(), named.dlq_url.as_str()),
        (notifier.as_str(), notifier_dlq.as_str())
    );
    let unknown = Queues::resolve(&local(Some("Reminders")), &sqs, &cloudformation)
        .await
        .expect_err("no such queue");
    assert!(
        matches!(&unknown, OpsError::NotFound(m) if m.contains("Reminders")
            && m.contains(&format!("{prefix}-notifierqueue"))),
        "{unknown}"
    );

    let missing = Queues::resolve(
        &Target::Local {
            prefix: unique_name("nothing"),
            queue: None,
        },
        &sqs,
        &cloudformation,
    )
    .await
    .expect_err("no such queues");
    assert!(matches!(missing, OpsError::NotFound(_)), "{missing}");

    let stack = unique_name("no-such-stack");
    let no_stack = Target::Stack {
        stack: stack.clone(),
        queue: None,
    };
    let unknown = Queues::resolve(&no_stack, &sqs, &cloudformation)
        .await
        .expect_err("no such stack");
    assert!(
        matches!(&unknown, OpsError::NotFound(m) if m.contains(&stack)),
        "{unknown}"
    );

    let down = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&config)
            .endpoint_url("http://127.0.0.1:9")
            .build(),
    );
    let unreachable = queue_stats(&down, None, &jobs)
        .await
        .expect_err("nothing listens on port 9");
    assert!(
        matches!(unreachable, OpsError::Unreachable { .. }),
        "{unreachable}"
    );
}
