//! The outbox: every log entry goes to JetStream, in log order, at least once; `Nats-Msg-Id`
//! makes JetStream drop re-publications after a restart. Scheduled tasks also go to the work
//! queue, so dispatch needs nothing but the log and survives crashes on either side.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;
use orca_log::Log;
use orca_proto::{Message, v1};
use tokio::sync::watch;

use crate::Error;
use crate::codec::{CONTENT_TYPE, PROTOBUF};

const CHECKPOINT: &[u8] = b"published";

/// Tuning of the outbox.
#[derive(Debug, Clone)]
pub struct OutboxOptions {
    /// Subject prefix (default `orca`).
    pub prefix: String,
    /// Events published before their acks are awaited together (default 1024).
    pub chunk: usize,
    /// Wait before trying again after NATS failed (default 500 ms).
    pub retry: Duration,
}

impl Default for OutboxOptions {
    fn default() -> Self {
        Self {
            prefix: "orca".into(),
            chunk: 1024,
            retry: Duration::from_millis(500),
        }
    }
}

/// Publishes the log to NATS; see the module docs.
pub struct Outbox {
    log: Log,
    js: jetstream::Context,
    tree: sled::Tree,
    options: OutboxOptions,
    published: watch::Sender<u64>,
}

impl Outbox {
    /// An outbox over `log` (its checkpoint lives in the log's database, tree `outbox`).
    pub fn new(log: Log, js: jetstream::Context, options: OutboxOptions) -> Result<Self, Error> {
        let tree = log
            .db()
            .open_tree("outbox")
            .map_err(orca_log::Error::from)?;
        let at = tree
            .get(CHECKPOINT)
            .map_err(orca_log::Error::from)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        let (published, _) = watch::channel(at);
        Ok(Self {
            log,
            js,
            tree,
            options,
            published,
        })
    }

    /// Follows the position up to which everything is published.
    pub fn published(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Publishes until `shutdown` turns true and everything durable is out (or NATS is gone).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), Error> {
        let mut head = self.log.subscribe();
        loop {
            let from = *self.published.borrow() + 1;
            // sled reads are blocking work: keep them off the async workers.
            let (log, chunk) = (self.log.clone(), self.options.chunk);
            let records = tokio::task::spawn_blocking(move || log.read_from(from, chunk))
                .await
                .map_err(Error::nats)??;
            if records.is_empty() {
                if *shutdown.borrow() {
                    return Ok(());
                }
                tokio::select! {
                    changed = head.changed() => if changed.is_err() { return Ok(()) },
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let (acked, error) = self.publish(&records).await;
            if acked >= from {
                self.tree
                    .insert(CHECKPOINT, &acked.to_be_bytes())
                    .map_err(orca_log::Error::from)?;
                self.published.send_replace(acked);
            }
            if let Some(e) = error {
                tracing::warn!(error = %e, from = acked + 1, "publishing events failed; retrying from there");
                if *shutdown.borrow() {
                    // NATS is gone and we are stopping: the checkpoint says where to resume.
                    return Ok(());
                }
                tokio::time::sleep(self.options.retry).await;
                // A server that lost its state (or a new one) needs the streams again.
                if let Err(e) = crate::streams::ensure(&self.js, &self.options.prefix).await {
                    tracing::warn!(error = %e, "cannot create the JetStream streams yet");
                }
            }
        }
    }

    /// Publishes `records` pipelined and returns the last position whose event (and task) and
    /// every one before it were acknowledged, with the first error if any. Only that prefix
    /// counts as published; the rest is published again, deduplicated by `Nats-Msg-Id`.
    async fn publish(&self, records: &[orca_log::Recorded]) -> (u64, Option<Error>) {
        let before = records.first().map_or(0, |r| r.position.saturating_sub(1));
        let mut acks: Vec<(u64, PublishAckFuture)> = Vec::with_capacity(records.len());
        let mut error = None;
        for r in records {
            if let Err(e) = self.send(r, &mut acks).await {
                error = Some(e);
                break;
            }
        }
        let mut acked = before;
        let mut broken = false;
        for (position, ack) in acks {
            match ack.await {
                Ok(_) if !broken => acked = position,
                Ok(_) => {}
                Err(e) => {
                    broken = true;
                    // Everything from `position` on is published again.
                    acked = acked.min(position.saturating_sub(1));
                    error.get_or_insert(Error::nats(e));
                }
            }
        }
        (acked, error)
    }

    async fn send(
        &self,
        r: &orca_log::Recorded,
        acks: &mut Vec<(u64, PublishAckFuture)>,
    ) -> Result<(), Error> {
        let prefix = &self.options.prefix;
        {
            let (event_id, field) =
                orca_proto::peek_event(&r.payload).ok_or(Error::Corrupt(r.position))?;
            let mut headers = HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, event_id.as_str());
            headers.insert(CONTENT_TYPE, PROTOBUF);
            let name = orca_proto::event_type_name(field);
            let subject = orca_domain::subject_for(prefix, &r.stream, name);
            let bytes =
                orca_proto::published_event_bytes(&r.payload, r.position, &r.stream, r.version);
            acks.push((
                r.position,
                self.js
                    .publish_with_headers(subject, headers, Bytes::from(bytes))
                    .await
                    .map_err(Error::nats)?,
            ));
            if name != "task_scheduled" {
                return Ok(());
            }
            let event =
                orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version)
                    .map_err(|_| Error::Corrupt(r.position))?;
            if let Some(v1::event::Body::TaskScheduled(t)) = &event.body {
                let task = v1::Task {
                    task_id: t.task_id.clone(),
                    process_id: orca_domain::ids::split_stream(&event.stream)
                        .map(|(_, id)| id.to_owned())
                        .unwrap_or_default(),
                    step_index: t.index,
                    step: t.name.clone(),
                    attempt: t.attempt,
                    workflow: t.workflow.clone(),
                    state: t.state.clone(),
                    subscription: t.subscription.clone(),
                };
                let mut headers = HeaderMap::new();
                headers.insert(async_nats::header::NATS_MESSAGE_ID, task.task_id.as_str());
                headers.insert(CONTENT_TYPE, PROTOBUF);
                // The task is published after its event: both must be acked for the position.
                if let Some(last) = acks.last_mut() {
                    last.0 = r.position.saturating_sub(1);
                }
                acks.push((
                    r.position,
                    self.js
                        .publish_with_headers(
                            format!("{prefix}.task.{}", t.name),
                            headers,
                            Bytes::from(task.encode_to_vec()),
                        )
                        .await
                        .map_err(Error::nats)?,
                ));
            }
        }
        Ok(())
    }
}
