//! `orca`: run the service, a step worker, the demo or the bench, and drive a running service.

use clap::{Parser, Subcommand};

mod cli;

/// orca allocates many small, short-lived objects (decoded events, views); mimalloc handles that
/// far better than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// orca — an event-sourced orchestrator for product subscriptions and their workflows.
///
/// Start here: `orca demo` runs the whole story (it starts a local nats-server, the service and
/// the example step worker, then creates, modifies, validates and terminates a UserGroup
/// subscription). `orca serve` and `orca worker example` run the pieces apart; the other verbs
/// talk to a running service.
#[derive(Parser)]
#[command(name = "orca", version, propagate_version = true)]
struct Cli {
    /// NATS server to use (default nats://127.0.0.1:4222; the demo and the bench start their
    /// own server when this is not given). Several may be given, comma-separated; credentials
    /// may be in it (nats://user:password@host, nats://token@host) and are never printed.
    #[arg(long, global = true, env = "ORCA_NATS_URL", hide_env_values = true)]
    nats_url: Option<String>,
    #[command(flatten)]
    connect: orca::connect::NatsFlags,
    /// Subject prefix of the service.
    #[arg(long, global = true, default_value = "orca", env = "ORCA_PREFIX")]
    prefix: String,
    /// Print machine-readable JSON (proto3 JSON mapping) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the orca service: NATS endpoints, engine, event log, views and event publisher.
    Serve(cli::serve::Args),
    /// Run a step worker.
    #[command(subcommand)]
    Worker(cli::worker::Command),
    /// Run the whole story locally: create, modify, validate and terminate a UserGroup.
    Demo(cli::demo::Args),
    /// Start, inspect and follow processes (workflow runs); retry, abort, resume and call them back.
    #[command(subcommand)]
    Process(cli::process::Command),
    /// Inspect and list subscriptions; set one back in sync.
    #[command(subcommand)]
    Subscription(cli::subscription::Command),
    /// List workflows and show their input forms.
    #[command(subcommand)]
    Workflow(cli::workflow::Command),
    /// Submit business transactions, matched against the catalog's rules.
    #[command(subcommand)]
    Transaction(cli::transaction::Command),
    /// Submit orders of items (add, modify, delete subscriptions); follow and cancel them.
    #[command(subcommand)]
    Order(cli::order::Command),
    /// List the catalog's schedules with their next due time; run one now.
    #[command(subcommand)]
    Schedule(cli::schedule::Command),
    /// See whether the engine runs; pause and resume it.
    #[command(subcommand)]
    Engine(cli::engine::Command),
    /// Follow the published events.
    #[command(subcommand)]
    Events(cli::events::Command),
    /// Rebuild or verify the views from the event log (the service must be stopped).
    #[command(subcommand)]
    Views(cli::views::Command),
    /// Read the event log over NATS; export it from a stopped service, import it elsewhere.
    #[command(subcommand)]
    Log(cli::log::Command),
    /// Rebuild a stopped service's views from its whole log, with progress and events/s.
    Replay(cli::log::Replay),
    /// Measure throughput and latency of create workflows through NATS.
    Bench(cli::bench::Args),
}

/// Options every verb sees.
pub struct Global {
    /// Given NATS URL, if any.
    pub nats_url: Option<String>,
    /// Subject prefix.
    pub prefix: String,
    /// JSON output.
    pub json: bool,
    /// Credentials and TLS for NATS.
    pub connect: orca::connect::NatsFlags,
}

impl Global {
    /// The NATS URL to use for client verbs.
    pub fn url(&self) -> String {
        self.nats_url
            .clone()
            .unwrap_or_else(|| "nats://127.0.0.1:4222".into())
    }

    /// Where and how to reach NATS: the URL with the credential and TLS flags.
    pub fn nats(&self) -> anyhow::Result<orca::connect::Nats> {
        orca::connect::Nats::new(&self.url(), &self.connect)
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ORCA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,orca=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let global = Global {
        nats_url: cli.nats_url,
        prefix: cli.prefix,
        json: cli.json,
        connect: cli.connect,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(a) => cli::serve::run(&global, a).await,
            Command::Worker(c) => cli::worker::run(&global, c).await,
            Command::Demo(a) => cli::demo::run(&global, a).await,
            Command::Process(c) => cli::process::run(&global, c).await,
            Command::Subscription(c) => cli::subscription::run(&global, c).await,
            Command::Workflow(c) => cli::workflow::run(&global, c).await,
            Command::Engine(c) => cli::engine::run(&global, c).await,
            Command::Schedule(c) => cli::schedule::run(&global, c).await,
            Command::Transaction(c) => cli::transaction::run(&global, c).await,
            Command::Order(c) => cli::order::run(&global, c).await,
            Command::Events(c) => cli::events::run(&global, c).await,
            Command::Views(c) => cli::views::run(&global, c).await,
            Command::Log(c) => cli::log::run(&global, c).await,
            Command::Replay(a) => cli::log::replay(&global, a).await,
            Command::Bench(a) => cli::bench::run(&global, a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_verb_and_flag_is_well_formed() {
        // What clap checks when a debug build starts: no two flags of a verb share a name.
        super::Cli::command().debug_assert();
    }
}
