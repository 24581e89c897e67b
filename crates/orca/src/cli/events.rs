//! `orca events tail|notifications`

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
    /// Print the TM Forum style state-change notifications (ServiceStateChangeEvent,
    /// ServiceOrderStateChangeEvent) as they are published, or from any point of their stream:
    /// a late reader gets every one, in order, without a gap.
    Notifications {
        /// Start from the stream's first notification instead of new ones.
        #[arg(long, conflicts_with = "from_seq")]
        from_start: bool,
        /// Start from this sequence of the notification stream.
        #[arg(long, value_name = "SEQ")]
        from_seq: Option<u64>,
        /// Only subjects matching this filter below `<prefix>.tmf.`, e.g. `service.>`,
        /// `serviceOrder.<order id>.>` or `*.*.ServiceOrderStateChangeEvent`.
        #[arg(long, default_value = ">")]
        filter: String,
        /// Stop after this many notifications.
        #[arg(long)]
        count: Option<usize>,
    },
}

pub async fn run(g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    match c {
        Command::Tail {
            from_start,
            filter,
            count,
        } => {
            let policy = if from_start {
                DeliverPolicy::All
            } else {
                DeliverPolicy::New
            };
            let stream = orca_nats::streams::events_stream(&g.prefix);
            let filter = format!("{}.evt.{filter}", g.prefix);
            follow(g, &stream, "event", &filter, policy, count, |m| {
                match v1::Event::decode(m.payload.as_ref()) {
                    Ok(e) if g.json => println!("{}", serde_json::to_string(&e)?),
                    Ok(e) => println!("{:>8}  {}  v{}", e.position, m.subject, e.version),
                    Err(err) => eprintln!("undecodable event on {}: {err}", m.subject),
                }
                Ok(())
            })
            .await
        }
        Command::Notifications {
            from_start,
            from_seq,
            filter,
            count,
        } => {
            let policy = match (from_seq, from_start) {
                (Some(start_sequence), _) => DeliverPolicy::ByStartSequence { start_sequence },
                (None, true) => DeliverPolicy::All,
                (None, false) => DeliverPolicy::New,
            };
            let stream = orca_nats::notifier::notifications_stream(&g.prefix);
            let filter = format!("{}.tmf.{filter}", g.prefix);
            follow(g, &stream, "notification", &filter, policy, count, |m| {
                let sequence = m.info().map(|i| i.stream_sequence).unwrap_or_default();
                match serde_json::from_slice::<serde_json::Value>(&m.payload) {
                    Ok(mut n) if g.json => {
                        if let Some(fields) = n.as_object_mut() {
                            fields.insert("sequence".into(), serde_json::json!(sequence));
                        }
                        println!("{n}");
                    }
                    Ok(n) => match serde_json::from_value::<v1::StateChangeEvent>(n) {
                        Ok(n) => println!("{}", orca::render::notification(sequence, &n)),
                        Err(err) => eprintln!("unreadable notification on {}: {err}", m.subject),
                    },
                    Err(err) => eprintln!("unreadable notification on {}: {err}", m.subject),
                }
                Ok(())
            })
            .await
        }
    }
}

/// Follows `stream`'s messages on `filter` from `policy` with a push ordered consumer (it
/// survives server restarts, resuming after a missed heartbeat), handing each to `show`, until
/// `count` were shown or Ctrl-C.
async fn follow(
    g: &Global,
    stream: &str,
    what: &str,
    filter: &str,
    policy: DeliverPolicy,
    count: Option<usize>,
    mut show: impl FnMut(&jetstream::Message) -> anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    let client = g.nats()?.connect("orca-events").await?;
    let js = jetstream::new(client.clone());
    let stream = js.get_stream(stream).await.with_context(|| {
        format!("finding the {what} stream (has `orca serve` run against this NATS?)")
    })?;
    let consumer = stream
        .create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: filter.to_owned(),
            deliver_policy: policy,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating the {what} consumer"))?;
    let mut messages = consumer.messages().await?;
    let mut seen = 0usize;
    while count.is_none_or(|c| seen < c) {
        let next = tokio::select! {
            m = messages.next() => m,
            _ = super::signal() => break,
        };
        let Some(m) = next else { break };
        match m {
            Ok(m) => show(&m)?,
            Err(e) => {
                eprintln!("(stream interrupted: {e}; resuming)");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        seen += 1;
    }
    Ok(ExitCode::SUCCESS)
}
