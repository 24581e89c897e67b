//! `orca events tail`

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::push};
use futures::StreamExt;
use orca_proto::{Message, v1};

use crate::Global;

/// The events orca publishes to JetStream.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Print events as they are published (Ctrl-C to stop).
    Tail {
        /// Start from the first event in the stream instead of new ones.
        #[arg(long)]
        from_start: bool,
        /// Only subjects matching this filter below `<prefix>.evt.`, e.g. `subscription.>` or
        /// `process.*.process_completed`.
        #[arg(long, default_value = ">")]
        filter: String,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
}

pub async fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    let Command::Tail {
        from_start,
        filter,
        count,
    } = c;
    let client = async_nats::connect(g.url())
        .await
        .with_context(|| format!("connecting to NATS at {}", g.url()))?;
    let js = jetstream::new(client.clone());
    let stream = js
        .get_stream(orca_nats::streams::events_stream(&g.prefix))
        .await
        .context("finding the event stream (has `orca serve` run against this NATS?)")?;
    // A push ordered consumer survives server restarts (it resumes after a missed heartbeat).
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: format!("{}.evt.{filter}", g.prefix),
            deliver_policy: if from_start {
                DeliverPolicy::All
            } else {
                DeliverPolicy::New
            },
            ..Default::default()
        })
        .await
        .context("creating the tail consumer")?;
    let mut messages = consumer.messages().await?;
    let mut seen = 0usize;
    loop {
        let next = tokio::select! {
            m = messages.next() => m,
            _ = super::signal() => break,
        };
        let Some(m) = next else { break };
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                eprintln!("(stream interrupted: {e}; resuming)");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        match v1::Event::decode(m.payload.as_ref()) {
            Ok(e) if g.json => println!("{}", serde_json::to_string(&e)?),
            Ok(e) => println!("{:>8}  {}  v{}", e.position, m.subject, e.version),
            Err(err) => eprintln!("undecodable event on {}: {err}", m.subject),
        }
        seen += 1;
        if count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}
