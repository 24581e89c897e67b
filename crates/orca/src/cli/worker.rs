//! `orca worker example`

use std::process::ExitCode;

use orca_worker::{Worker, WorkerOptions};
use tokio::sync::watch;

use crate::Global;

/// Step workers shipped with orca.
#[derive(clap::Subcommand)]
pub enum Command {
    /// The example worker of the default catalog. For the UserGroup workflows:
    /// provision_user_group (a fake group id), modify_user_group, validate_user_group (compares
    /// the group id with the fake provisioning system's) and deprovision_user_group. For
    /// CloudPortal's tenant workflows, simulated: verify_master_user_email,
    /// collect_credit_card_info, verify_credit_card_info, create_oss_account and
    /// pre_authorize_subscription.
    Example {
        /// Tasks run at once per step.
        #[arg(long, default_value_t = 256, value_parser = super::parse_concurrency)]
        concurrency: usize,
        /// Fail the first N attempts of each task of STEP (every attempt without N) with a
        /// retryable error, to see failure handling: the step's retry policy tries again after a
        /// backoff (the process waits meanwhile); once its attempts are used up the process
        /// fails and `orca process retry` runs the step again. KIND makes it another failure:
        /// `permanent` (a business failure, e.g. a card declined: not retried),
        /// `api_unavailable` or `inconsistent_data` (unexpected: CloudPortal's Error), e.g.
        /// `collect_credit_card_info:permanent`. Repeatable.
        #[arg(long, value_name = "STEP[:N][:KIND]")]
        fail: Vec<orca_worker::example::FailRule>,
        /// Make each task of STEP take DURATION (e.g. `90s`), telling its progress: the worker
        /// heartbeats and keeps the task from being delivered again meanwhile. Repeatable.
        #[arg(long, value_name = "STEP:DURATION")]
        slow: Vec<orca_worker::example::SlowRule>,
        /// How long a task may go without a sign of life before JetStream hands it to another
        /// worker (e.g. `30s`); the worker extends it while a task runs.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        ack_wait: std::time::Duration,
    },
}

pub async fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    let Command::Example {
        concurrency,
        fail,
        slow,
        ack_wait,
    } = c;
    let client = g.nats()?.connect("orca-worker-example").await?;
    let options = WorkerOptions {
        prefix: g.prefix.clone(),
        concurrency,
        actor: "worker:example".into(),
        ack_wait,
        ..WorkerOptions::default()
    };
    let (stop, shutdown) = watch::channel(false);
    let worker = orca_worker::example::register(Worker::new(client, options), &fail, &slow);
    eprintln!(
        "example worker taking {0}.task.provision_user_group, .modify_user_group, \
         .validate_user_group and .deprovision_user_group; Ctrl-C to stop",
        g.prefix
    );
    let mut run = tokio::spawn(worker.run(shutdown));
    tokio::select! {
        r = &mut run => { r??; }
        _ = super::signal() => {
            let _ = stop.send(true);
            run.await??;
        }
    }
    Ok(ExitCode::SUCCESS)
}
