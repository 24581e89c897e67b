//! Tasks lost from the work queue are sent again.
//!
//! The outbox sends a task once (again only after a crash, while its process still waits for
//! it); a work queue purged, deleted or emptied by hand loses it, and its process would wait
//! forever. Every so often (and soon after a start) the redispatcher compares the tasks the log
//! has out with workers (the engine's index: [`orca_engine::tasks_out`]) with what the work
//! queue holds. A task whose process awaits it (the domain's [`ProcessState::awaits`]), whose
//! publication the outbox confirmed, and which the queue no longer holds, is lost: it is
//! published again, under a message id of its own (`<task id>#<queue sequence>`, so the queue's
//! duplicate window does not drop it as the first one). A worker lets a task go only after its
//! report is durable, so a task taken and reported in the meantime is no longer awaited when it
//! is looked at again, right before it would be sent; a task sent twice has one effect anyway
//! (invariant 9).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::{self, stream::RawMessageErrorKind};
use orca_domain::ProcessState;
use orca_domain::ids::ProcessId;
use orca_log::SharedLog;
use orca_proto::v1;
use tokio::sync::watch;

use crate::Error;
use crate::outbox::task_publication;

/// Tuning of the redispatcher.
#[derive(Debug, Clone)]
pub struct RedispatchOptions {
    /// Subject prefix (default `orca`).
    pub prefix: String,
    /// Time between two looks at the work queue (default 30 s).
    pub every: Duration,
    /// The first look, after a start (default 2 s: the outbox has resynchronized by then).
    pub first: Duration,
    /// A work queue holding more messages than this is not read (default 100,000): with that
    /// many waiting, workers are behind, and reading them all would cost more than it finds.
    pub max_queued: u64,
}

impl Default for RedispatchOptions {
    fn default() -> Self {
        Self {
            prefix: "orca".into(),
            every: Duration::from_secs(30),
            first: Duration::from_secs(2),
            max_queued: 100_000,
        }
    }
}

/// A task out with workers, as the event that scheduled it.
struct Out {
    stream: String,
    position: u64,
    task: v1::TaskScheduled,
}

/// Sends lost tasks again; see the module docs.
pub struct Redispatcher {
    log: SharedLog,
    js: jetstream::Context,
    options: RedispatchOptions,
    /// The outbox's confirmed position: tasks scheduled after it may not be in the queue yet.
    published: watch::Receiver<u64>,
}

impl Redispatcher {
    /// A redispatcher over `log`, trusting the outbox's `published` position.
    pub fn new(
        log: SharedLog,
        js: jetstream::Context,
        published: watch::Receiver<u64>,
        options: RedispatchOptions,
    ) -> Self {
        Self {
            log,
            js,
            options,
            published,
        }
    }

    /// Looks every `every` until `shutdown` turns true. Never fails: what goes wrong is logged
    /// and tried again next time.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut wait = self.options.first;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            match self.check().await {
                Ok(0) => {}
                Ok(sent) => tracing::info!(sent, "tasks lost from the work queue sent again"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot compare the work queue with the log; trying again later")
                }
            }
            wait = self.options.every;
        }
    }

    /// One look: sends every lost task again; how many were.
    pub async fn check(&self) -> Result<usize, Error> {
        // The queue's size first: with too many waiting, nothing else is looked at.
        let Some((stream, first)) = self.queue().await? else {
            return Ok(0);
        };
        let published = *self.published.borrow();
        let log = self.log.clone();
        let out = tokio::task::spawn_blocking(move || out_and_awaited(&*log, published))
            .await
            .map_err(Error::nats)??;
        if out.is_empty() {
            return Ok(0);
        }
        // Read after the tasks out were: one taken and reported meanwhile is not awaited when
        // looked at again below.
        let (queued, last) = self.queued(&stream, first).await?;
        let lost: Vec<Out> = out
            .into_iter()
            .filter(|o| !queued.contains(&o.task.task_id))
            .collect();
        if lost.is_empty() {
            return Ok(0);
        }
        // Looked at again now: a task taken and reported since is no longer awaited.
        let log = self.log.clone();
        let lost = tokio::task::spawn_blocking(move || -> Result<Vec<Out>, Error> {
            let mut still = Vec::new();
            for o in lost {
                if fold(&*log, &o.stream)?
                    .0
                    .awaits(o.task.index, o.task.attempt)
                    .is_ok()
                {
                    still.push(o);
                }
            }
            Ok(still)
        })
        .await
        .map_err(Error::nats)??;
        for o in &lost {
            tracing::warn!(
                task = %o.task.task_id,
                scheduled_at = o.position,
                "task awaited but no longer in the work queue (purged or deleted?); sending it again"
            );
            let id = format!("{}#{last}", o.task.task_id);
            let (subject, headers, payload) =
                task_publication(&self.options.prefix, &o.stream, &o.task, &id);
            self.js
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(Error::nats)?
                .await
                .map_err(Error::nats)?;
        }
        Ok(lost.len())
    }

    /// The work queue and its first sequence; `None` when it holds more than `max_queued`.
    async fn queue(&self) -> Result<Option<(jetstream::stream::Stream, u64)>, Error> {
        let name = crate::streams::tasks_stream(&self.options.prefix);
        let mut stream = match self.js.get_stream(&name).await {
            Ok(s) => s,
            Err(_) => {
                crate::streams::ensure(&self.js, &self.options.prefix).await?;
                self.js.get_stream(&name).await.map_err(Error::nats)?
            }
        };
        let state = stream.info().await.map_err(Error::nats)?.state.clone();
        if state.messages > self.options.max_queued {
            tracing::info!(
                queued = state.messages,
                max = self.options.max_queued,
                "the work queue holds too many tasks to compare with the log; not looking this time"
            );
            return Ok(None);
        }
        Ok(Some((stream, state.first_sequence.max(1))))
    }

    /// The task ids the work queue holds from sequence `first` on, and the last sequence read.
    async fn queued(
        &self,
        stream: &jetstream::stream::Stream,
        first: u64,
    ) -> Result<(HashSet<String>, u64), Error> {
        let subjects = format!("{}.task.>", self.options.prefix);
        let mut ids = HashSet::new();
        let mut seq = first;
        let mut last = first.saturating_sub(1);
        loop {
            match stream
                .get_first_raw_message_by_subject(&subjects, seq)
                .await
            {
                Ok(m) => {
                    if let Some(id) = m.headers.get(async_nats::header::NATS_MESSAGE_ID) {
                        // A task sent again carries `#<sequence>` after its id.
                        let id = id.as_str();
                        ids.insert(id.split_once('#').map_or(id, |(t, _)| t).to_owned());
                    }
                    last = m.sequence;
                    seq = m.sequence + 1;
                }
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(Error::nats(e)),
            }
        }
        Ok((ids, last))
    }
}

/// The last `TaskScheduled` of each step of a process, with its log position.
type Scheduled = HashMap<u32, (u64, v1::TaskScheduled)>;

/// A process folded from the log, with the last `TaskScheduled` of each step.
fn fold(log: &dyn orca_log::ReadLog, stream: &str) -> Result<(ProcessState, Scheduled), Error> {
    let mut state = ProcessState::default();
    let mut scheduled = HashMap::new();
    for r in log.read_stream(stream, 1)? {
        let e = orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version)
            .map_err(|_| Error::Corrupt(r.position))?;
        if let Some(v1::event::Body::TaskScheduled(t)) = &e.body {
            scheduled.insert(t.index, (e.position, t.clone()));
        }
        state.evolve(&e);
    }
    Ok((state, scheduled))
}

/// The tasks out with workers that their processes await, scheduled at or before `published`.
fn out_and_awaited(log: &dyn orca_log::EventLog, published: u64) -> Result<Vec<Out>, Error> {
    let mut found = Vec::new();
    let out = orca_engine::tasks_out(log).map_err(|e| Error::Index(e.to_string()))?;
    for (process, steps) in out {
        let stream = ProcessId::stream(&process);
        let (state, mut scheduled) = fold(log, &stream)?;
        for index in steps {
            let Some((position, task)) = scheduled.remove(&index) else {
                continue;
            };
            if position <= published && state.awaits(task.index, task.attempt).is_ok() {
                found.push(Out {
                    stream: stream.clone(),
                    position,
                    task,
                });
            }
        }
    }
    Ok(found)
}
