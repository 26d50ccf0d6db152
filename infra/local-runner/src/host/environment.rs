//! One execution environment: a process of the function's binary and the Runtime API it polls.

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep_until};

use super::FunctionConfig;
use crate::runtime_api::{ErrorReport, Event, RuntimeApi};

/// Why an invocation did not return a response.
#[derive(Debug, thiserror::Error)]
pub(super) enum Failure {
    /// The function reported an error for the invocation; its environment lives on.
    #[error("function error: {0}")]
    Function(ErrorReport),
    /// The runtime reported that its initialisation failed.
    #[error("init failed: {0}")]
    InitError(ErrorReport),
    /// The process exited before its first poll.
    #[error("init failed: the process exited ({0}) before asking for an invocation")]
    InitExit(ExitStatus),
    /// The process exited during the invocation.
    #[error("the process exited ({0}) during the invocation")]
    Crashed(ExitStatus),
    /// The process or its Runtime API could not be started, or could not be watched.
    #[error("cannot run the function's process")]
    Process(#[source] std::io::Error),
}

impl Failure {
    /// Whether the environment can take the next invocation: only after an error the function
    /// reported itself.
    pub(super) fn keeps_environment(&self) -> bool {
        matches!(self, Self::Function(_))
    }
}

/// A process of the function and its Runtime API. Dropping it kills the process (by the PID
/// it was started with), as Lambda discards an environment after a time-out or a crash.
pub(super) struct ExecutionEnvironment {
    api: RuntimeApi,
    child: Child,
    pid: Option<u32>,
    /// Whether the process has polled once (its init is over).
    initialized: bool,
    /// Whether an invocation is running: dropped then, the invocation ran out of time.
    busy: bool,
}

impl ExecutionEnvironment {
    /// Whether its process is still running (one that exited while idle is not reused: Lambda
    /// would start a fresh environment).
    pub(super) fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Starts a process of `function`'s binary with its environment, polling a new Runtime API.
    /// Init runs from here; the first invocation waits for it.
    pub(super) async fn start(function: &FunctionConfig) -> Result<Self, Failure> {
        let api = RuntimeApi::start(function.arn.clone())
            .await
            .map_err(Failure::Process)?;
        let mut command = Command::new(&function.binary);
        command
            .env_clear()
            .envs(function.variables.iter().map(|(k, v)| (k, v)))
            .env("AWS_LAMBDA_RUNTIME_API", api.address())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(path) = &function.log {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(Failure::Process)?;
            command.stderr(log.try_clone().map_err(Failure::Process)?);
            command.stdout(log);
        }
        let child = command.spawn().map_err(Failure::Process)?;
        let pid = child.id();
        tracing::info!(function = %function.name, pid, "started an execution environment");
        Ok(Self {
            api,
            child,
            pid,
            initialized: false,
            busy: false,
        })
    }

    /// Hands `event` to the process with `deadline` and waits for its answer, its error or its
    /// exit. The caller enforces the deadline by dropping the future (and then `self`).
    ///
    /// With `kill_after`, the process is killed (SIGKILL) that long after it took the invocation
    /// (after its init, when it is a new one), if it has not answered by then: a crash in the
    /// middle of the work, whose outcome is [`Failure::Crashed`]. Returns whether that kill
    /// happened.
    pub(super) async fn invoke(
        &mut self,
        event: Value,
        deadline: SystemTime,
        kill_after: Option<Duration>,
    ) -> (Result<Value, Failure>, bool) {
        self.busy = true;
        let request_id = self.api.invoke(event, deadline);
        let from_now = |after: Duration| Instant::now() + after;
        let mut kill_at = kill_after.filter(|_| self.initialized).map(from_now);
        let mut killed = false;
        let outcome = loop {
            tokio::select! {
                biased;
                event = self.api.event() => match event {
                    Some(Event::Polled(_)) if !self.initialized => {
                        self.initialized = true;
                        kill_at = kill_after.map(from_now);
                    }
                    Some(Event::Polled(_)) => {}
                    Some(Event::Responded { request_id: id, body, .. }) if id == request_id => {
                        break Ok(body);
                    }
                    Some(Event::Failed { request_id: id, error }) if id == request_id => {
                        break Err(Failure::Function(error));
                    }
                    Some(Event::InitFailed(error)) => break Err(Failure::InitError(error)),
                    Some(other) => tracing::warn!(?other, "an answer to another invocation"),
                    None => {
                        break Err(Failure::Process(std::io::Error::other(
                            "the Runtime API stopped",
                        )));
                    }
                },
                exit = self.child.wait() => break Err(match exit {
                    Ok(status) if self.initialized => Failure::Crashed(status),
                    Ok(status) => Failure::InitExit(status),
                    Err(e) => Failure::Process(e),
                }),
                // Last: an answer or an exit that is already there wins over the kill.
                () = sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() && !killed => {
                    killed = true;
                    tracing::warn!(
                        pid = self.pid,
                        "chaos: killing the execution environment during its invocation"
                    );
                    // Its exit is seen by the branch above.
                    let _ = self.child.start_kill();
                }
            }
        };
        self.busy = false;
        (outcome, killed)
    }
}

impl Drop for ExecutionEnvironment {
    fn drop(&mut self) {
        if self.busy {
            tracing::warn!(
                pid = self.pid,
                "the invocation ran past its deadline: killing its execution environment"
            );
        }
        // SIGKILL to the PID this runner started; tokio never signals a child it has reaped,
        // and reaps this one in the background.
        let _ = self.child.start_kill();
    }
}
