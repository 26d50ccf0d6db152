//! `queue-ops`: operate the pipeline's queues. See `queue-ops --help` and the README's runbook.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use comfy_table::{Table, presets::UTF8_FULL};
use queue_ops::redrive::{self, LoopOptions};
use queue_ops::stats::{QueueStats, queue_stats};
use queue_ops::text::{json_printable, printable};
use queue_ops::{OpsError, Queues, Target, dlq};

#[derive(Parser)]
#[command(about = "Inspect and redrive the dead-letter queue, and check the queues' health")]
struct Cli {
    #[command(flatten)]
    target: TargetArgs,
    /// The worker's queue, by its logical id in template.yaml (e.g. `NotifierQueue`), with
    /// --stack or --local; needed only when there are several queues with a dead-letter queue.
    #[arg(
        long,
        global = true,
        value_name = "LOGICAL_ID",
        conflicts_with = "queue_url"
    )]
    queue: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct TargetArgs {
    /// A deployed stack: a queue of it with a dead-letter queue (see --queue).
    #[arg(long, global = true)]
    stack: Option<String>,
    /// A local pipeline started by `local-runner` with this `--stack` prefix (e.g. `local`).
    #[arg(long, global = true, value_name = "PREFIX")]
    local: Option<String>,
    /// The job queue's URL (with --dlq-url).
    #[arg(long, global = true, requires = "dlq_url")]
    queue_url: Option<String>,
    /// The dead-letter queue's URL (with --queue-url).
    #[arg(long, global = true, requires = "queue_url")]
    dlq_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// The job queue.
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// The dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Depth, in flight, delayed and age of the oldest message, of the queue and the DLQ.
    Stats {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// The parked messages with their reasons. Consumes nothing.
    List {
        /// At most this many messages.
        #[arg(long, default_value_t = 100)]
        max: usize,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Move parked messages back to the job queue, showing progress until done.
    Redrive {
        /// At most this many messages per second.
        #[arg(long)]
        rate: Option<u32>,
        /// Only messages of this class (e.g. `malformed_job`); implies --mode loop.
        #[arg(long)]
        class: Option<String>,
        /// native: SQS's message move task; loop: send, then delete, one batch at a time;
        /// auto: native where the backend has it.
        #[arg(long, value_enum, default_value_t = Mode::Auto)]
        mode: Mode,
        /// Cancel the running native move task instead.
        #[arg(long)]
        cancel: bool,
        /// Seconds the loop holds a message invisible while moving it.
        #[arg(long, default_value_t = 60)]
        hold: u64,
    },
    /// Delete parked messages (after confirmation), reporting how many.
    Purge {
        /// Only messages of this class.
        #[arg(long)]
        class: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Auto,
    Native,
    Loop,
}

/// The clients, and whether CloudWatch may be asked (AWS, or an emulator that serves it).
struct Clients {
    sqs: aws_sdk_sqs::Client,
    cloudwatch: Option<aws_sdk_cloudwatch::Client>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let target = match cli.target {
        TargetArgs {
            stack: Some(stack), ..
        } => Target::Stack {
            stack,
            queue: cli.queue,
        },
        TargetArgs {
            local: Some(prefix),
            ..
        } => Target::Local {
            prefix,
            queue: cli.queue,
        },
        TargetArgs {
            queue_url: Some(queue),
            dlq_url: Some(dlq),
            ..
        } => Target::Urls { queue, dlq },
        _ => bail!("say which queues: --stack, --local or --queue-url with --dlq-url"),
    };
    let endpoint = |service: &str| {
        [
            "AWS_ENDPOINT_URL".to_owned(),
            format!("AWS_ENDPOINT_URL_{service}"),
        ]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.is_empty()))
    };
    if matches!(target, Target::Local { .. }) && !endpoint("SQS") {
        bail!("--local needs a local endpoint: eval \"$(make -s emulator-env)\" first");
    }
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let clients = Clients {
        sqs: aws_sdk_sqs::Client::new(&sdk),
        // Locally, only an emulator that serves CloudWatch is asked; never real AWS.
        cloudwatch: (matches!(target, Target::Stack { .. }) || endpoint("CLOUDWATCH"))
            .then(|| aws_sdk_cloudwatch::Client::new(&sdk)),
    };
    let queues = Queues::resolve(
        &target,
        &clients.sqs,
        &aws_sdk_cloudformation::Client::new(&sdk),
    )
    .await?;
    match cli.command {
        Command::Queue {
            command: QueueCommand::Stats { json },
        } => stats(&clients, &queues, json).await,
        Command::Dlq { command } => match command {
            DlqCommand::List { max, json } => list(&clients, &queues, max, json).await,
            DlqCommand::Redrive {
                rate,
                class,
                mode,
                cancel,
                hold,
            } => {
                if cancel {
                    let moved = redrive::cancel_native(&clients.sqs, &queues).await?;
                    println!("cancelled the move task after about {moved} messages");
                    return Ok(());
                }
                let options = LoopOptions {
                    class,
                    rate,
                    hold: Duration::from_secs(hold),
                };
                redrive(&clients, &queues, mode, options).await
            }
            DlqCommand::Purge { class, yes } => purge(&clients, &queues, class, yes).await,
        },
    }
}

async fn stats(clients: &Clients, queues: &Queues, json: bool) -> anyhow::Result<()> {
    let mut rows: Vec<QueueStats> = Vec::new();
    for url in [&queues.queue_url, &queues.dlq_url] {
        rows.push(queue_stats(&clients.sqs, clients.cloudwatch.as_ref(), url).await?);
    }
    if json {
        println!("{}", json_printable(&serde_json::to_string_pretty(&rows)?));
        return Ok(());
    }
    let mut table = Table::new();
    table.load_style(UTF8_FULL).set_header([
        "queue",
        "depth",
        "in flight",
        "delayed",
        "oldest message",
    ]);
    for row in rows {
        table.add_row([
            row.name,
            row.depth.to_string(),
            row.in_flight.to_string(),
            row.delayed.to_string(),
            row.oldest_age_seconds.map_or_else(
                || "n/a (no CloudWatch data)".to_owned(),
                |s| humantime::format_duration(Duration::from_secs(s)).to_string(),
            ),
        ]);
    }
    println!("{table}");
    Ok(())
}

async fn list(clients: &Clients, queues: &Queues, max: usize, json: bool) -> anyhow::Result<()> {
    let messages = dlq::list(&clients.sqs, &queues.dlq_url, max, Duration::from_secs(60)).await?;
    if json {
        println!(
            "{}",
            json_printable(&serde_json::to_string_pretty(&messages)?)
        );
        return Ok(());
    }
    if messages.is_empty() {
        println!("the dead-letter queue is empty");
        return Ok(());
    }
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL)
        .set_header(dlq::ParkedMessage::COLUMNS);
    for m in &messages {
        table.add_row(m.cells());
    }
    println!("{table}");
    println!("{} message(s); visibility restored", messages.len());
    Ok(())
}

async fn redrive(
    clients: &Clients,
    queues: &Queues,
    mode: Mode,
    options: LoopOptions,
) -> anyhow::Result<()> {
    if mode == Mode::Native && options.class.is_some() {
        bail!("--class needs --mode loop (SQS's move task cannot filter)");
    }
    let native = mode == Mode::Native || (mode == Mode::Auto && options.class.is_none());
    if native {
        match redrive::start_native(&clients.sqs, queues, options.rate).await {
            Ok(_) => return follow_native(clients, queues).await,
            Err(OpsError::Unsupported { detail, .. }) if mode == Mode::Auto => {
                eprintln!(
                    "this backend has no message move task ({detail}); moving with the safe loop"
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    let report = redrive::move_loop(&clients.sqs, queues, &options, |r| {
        eprintln!(
            "moved {} | left in the DLQ (other classes) {}",
            r.moved, r.skipped
        );
    })
    .await?;
    println!(
        "done: {} message(s) moved back to the job queue, {} left in the DLQ",
        report.moved, report.skipped
    );
    Ok(())
}

async fn follow_native(clients: &Clients, queues: &Queues) -> anyhow::Result<()> {
    loop {
        let task = redrive::native_progress(&clients.sqs, queues)
            .await?
            .context("the move task disappeared")?;
        let total = task.to_move.map_or_else(|| "?".into(), |n| n.to_string());
        eprintln!("move task {}: {}/{} moved", task.status, task.moved, total);
        if task.finished() {
            if task.status == "FAILED" {
                bail!(
                    "the move task failed: {}",
                    printable(&task.failure_reason.unwrap_or_default())
                );
            }
            println!(
                "done: {} message(s) moved back to the job queue",
                task.moved
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn purge(
    clients: &Clients,
    queues: &Queues,
    class: Option<String>,
    yes: bool,
) -> anyhow::Result<()> {
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!("refusing to purge without confirmation: pass --yes (stdin is not a terminal)");
        }
        let which = class.as_deref().map_or("every message".to_owned(), |c| {
            format!("every message of class {c}")
        });
        print!("Delete {which} in {}? Type 'yes': ", queues.dlq_url);
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            bail!("not confirmed; nothing deleted");
        }
    }
    let deleted = dlq::purge(
        &clients.sqs,
        &queues.dlq_url,
        class.as_deref(),
        Duration::from_secs(60),
    )
    .await?;
    println!("purged {deleted} message(s)");
    Ok(())
}
