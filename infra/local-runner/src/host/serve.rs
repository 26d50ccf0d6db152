//! `local-runner serve-queues`: every SQS-triggered function of the template, hosted as
//! processes behind its queue's mapping.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{
    FunctionConfig, HostChaos, ProcessHost, Target, binary_name, build, sqs_triggered_functions,
};
use crate::esm::{Disposition, EventSourceMapping, InvocationReport, MappingChaos};
use crate::provision::{Provisioned, local_clients, mapping_settings, provision};
use crate::template::Template;

/// The library's feature that compiles its seams' fault injectors into a worker's binary.
const SEAM_FAULTS_FEATURE: &str = "queue-worker/testing";

/// What to host, and how.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// The functions' logical ids; empty hosts every SQS-triggered function.
    pub functions: Vec<String>,
    /// The cargo profile to build with (`dev` when empty).
    pub profile: String,
    /// Overrides each mapping's `MaximumConcurrency`.
    pub maximum_concurrency: Option<usize>,
    /// Overrides each function's timeout.
    pub function_timeout: Option<Duration>,
    /// Variables set in every hosted function's environment, over the template's: where a
    /// fake downstream listens, shorter backoffs for a test.
    pub environment: Vec<(String, String)>,
    /// Chaos of every mapping (duplicate deliveries, visibility timeout); its counter is shared.
    pub mapping_chaos: MappingChaos,
    /// Chaos of every process host (kills); its counter is shared.
    pub host_chaos: HostChaos,
    /// Where the hosted processes' stdout and stderr are appended (their logs and metric lines);
    /// `None` leaves them on the runner's own.
    pub function_log: Option<std::path::PathBuf>,
    /// Receives every invocation's report, with the function's logical id, besides the log.
    pub reports: Option<mpsc::UnboundedSender<(String, InvocationReport)>>,
}

/// Running mappings, one per hosted function. [`Serving::stop`] ends each mapping after its
/// invocations in flight and drops its environments, which kills their processes; dropping
/// this ends the mappings the same way, but only while the runtime keeps running.
pub struct Serving {
    /// The hosted functions' logical ids.
    pub functions: Vec<String>,
    /// The provisioned resources: queue URLs, table names and ARNs by logical id.
    pub resources: Provisioned,
    stop: Vec<oneshot::Sender<()>>,
    /// The mappings and their report loggers.
    tasks: Vec<JoinHandle<()>>,
}

impl Serving {
    /// Provisions `template` (its directory is the cargo workspace) under the name prefix
    /// `stack`, builds each function's binary and starts its mapping.
    pub async fn start(
        template: &Template,
        workspace: &Path,
        stack: &str,
        options: &ServeOptions,
    ) -> anyhow::Result<Self> {
        let (_, clients) = local_clients().await?;
        let resources = provision(template, stack, &clients)
            .await
            .context("provisioning the local resources from the template")?;
        let functions = if options.functions.is_empty() {
            sqs_triggered_functions(template)
                .into_iter()
                .map(str::to_owned)
                .collect()
        } else {
            options.functions.clone()
        };
        let profile = if options.profile.is_empty() {
            "dev"
        } else {
            &options.profile
        };
        let mut serving = Self {
            functions: functions.clone(),
            resources: resources.clone(),
            stop: Vec::new(),
            tasks: Vec::new(),
        };
        for function in &functions {
            let seam_faults = options.host_chaos.seam_fault_rate > 0.0;
            let binary = build(
                workspace,
                Target::Bin(binary_name(template, function)?),
                profile,
                if seam_faults {
                    &[SEAM_FAULTS_FEATURE]
                } else {
                    &[]
                },
            )
            .await
            .with_context(|| format!("building {function}"))?;
            let mut config =
                FunctionConfig::from_template(template, &resources, stack, function, binary)?;
            for (name, value) in &options.environment {
                config.set_variable(name, value);
            }
            if seam_faults {
                config.set_variable(
                    queue_worker::lambda::FAULT_RATE_VARIABLE,
                    &options.host_chaos.seam_fault_rate.to_string(),
                );
            }
            config.log.clone_from(&options.function_log);
            let (queue, mut settings) = mapping_settings(template, function)?;
            if let Some(maximum) = options.maximum_concurrency {
                settings.maximum_concurrency = maximum;
            }
            if let Some(timeout) = options.function_timeout {
                settings.function_timeout = timeout;
            }
            let (url, arn) = resources
                .reference(&queue)
                .zip(resources.arn(&queue))
                .with_context(|| format!("{function}'s queue {queue} was not provisioned"))?;
            let mapping = Arc::new(
                EventSourceMapping::new(
                    clients.sqs.clone(),
                    url,
                    arn,
                    settings,
                    ProcessHost::new(config).with_chaos(options.host_chaos.clone()),
                )
                .with_chaos(options.mapping_chaos.clone()),
            );
            let (stop, stopped) = oneshot::channel::<()>();
            let (reports, received) = mpsc::unbounded_channel::<InvocationReport>();
            let stop_requested = async {
                let _ = stopped.await;
            };
            serving.tasks.push(tokio::spawn(log_reports(
                function.clone(),
                received,
                options.reports.clone(),
            )));
            serving
                .tasks
                .push(tokio::spawn(mapping.run(stop_requested, reports)));
            serving.stop.push(stop);
        }
        Ok(serving)
    }

    /// Stops polling and waits for the invocations in flight.
    pub async fn stop(self) {
        for stop in self.stop {
            let _ = stop.send(());
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Logs each invocation of `function`'s mapping, and passes it on to `observer`, until the
/// mapping stops.
async fn log_reports(
    function: String,
    mut reports: mpsc::UnboundedReceiver<InvocationReport>,
    observer: Option<mpsc::UnboundedSender<(String, InvocationReport)>>,
) {
    while let Some(report) = reports.recv().await {
        let failed = match &report.disposition {
            Disposition::FailBatch(reason) => Some(reason.as_str()),
            _ => None,
        };
        tracing::info!(
            function,
            batch = report.batch_size,
            acknowledged = report.acknowledged,
            timed_out = report.timed_out,
            failed,
            "invocation"
        );
        if let Some(observer) = &observer {
            let _ = observer.send((function.clone(), report));
        }
    }
}
