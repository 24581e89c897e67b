//! The orca service in one process: log, engine, projector, outbox and NATS endpoints, started
//! in order and stopped in reverse so that nothing acknowledged is lost.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use orca_domain::Catalog;
use orca_engine::{Engine, EngineOptions, Tap};
use orca_log::{DiskLog, GroupCommitOptions, Log, LogOptions, SharedLog};
use orca_nats::{BusOptions, Outbox, OutboxOptions};
use orca_views::{Feed, Projector, Views};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::connect::Nats;

/// Everything `orca serve` needs.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// NATS: servers, credentials, TLS.
    pub nats: Nats,
    /// Directory for the event log (`<dir>/log`), the views (`<dir>/views`) and the outbox's
    /// checkpoint (`<dir>/outbox`).
    pub data_dir: PathBuf,
    /// Products, tasks and workflows.
    pub catalog: Arc<Catalog>,
    /// Subject prefix and request limits.
    pub bus: BusOptions,
    /// Batching and memory bounds of the engine.
    pub engine: EngineOptions,
    /// sled page cache for the log and for the views, each (default 16 MiB).
    pub cache_bytes: u64,
    /// Time between two looks for tasks lost from the work queue (default 30 s).
    pub task_check_every: Duration,
    /// Room kept free on the data directory's disk (default 64 MiB): commands are refused with
    /// UNAVAILABLE while less is free, so that the views and the log's index always have room
    /// for what was accepted; a file this size is freed to start on a disk that filled up.
    pub reserve_bytes: u64,
}

impl ServiceOptions {
    /// Defaults for a service on `nats` storing in `data_dir`.
    pub fn new(nats: Nats, data_dir: impl Into<PathBuf>, catalog: Arc<Catalog>) -> Self {
        Self {
            nats,
            data_dir: data_dir.into(),
            catalog,
            bus: BusOptions::default(),
            engine: EngineOptions::default(),
            cache_bytes: 16 * 1024 * 1024,
            task_check_every: Duration::from_secs(30),
            reserve_bytes: orca_log::RESERVE_BYTES,
        }
    }
}

/// A running service.
pub struct Service {
    /// Stops the endpoints (first).
    shutdown: watch::Sender<bool>,
    /// Stops the projector and the outbox once the engine is done (last).
    drain: watch::Sender<bool>,
    endpoints: JoinHandle<()>,
    scheduler: JoinHandle<()>,
    redispatcher: JoinHandle<()>,
    engine: JoinHandle<Result<(), orca_engine::Error>>,
    projector: JoinHandle<Result<(), orca_views::Error>>,
    outbox: JoinHandle<Result<(), orca_nats::Error>>,
    notifier: JoinHandle<Result<(), orca_nats::Error>>,
    client: async_nats::Client,
    /// The log (read access for tools and tests).
    pub log: Log,
    /// The views.
    pub views: Views,
    /// Position up to which events are published.
    pub published: watch::Receiver<u64>,
}

/// Fails when a service already answers on `nats` under `prefix`: one started beside it (by the
/// demo or the bench) would split the commands between two logs. `instead` says what to do.
pub async fn refuse_a_second_service(
    nats: &Nats,
    prefix: &str,
    instead: &str,
) -> anyhow::Result<()> {
    let client = crate::client::OrcaClient::connect_to(nats, prefix).await?;
    if client.info().await.is_ok() {
        anyhow::bail!("a service already answers on {nats} (prefix {prefix}): {instead}");
    }
    Ok(())
}

/// Opens the log, refusing clearly when another process holds it.
pub fn open_log(data_dir: &std::path::Path, cache_bytes: u64) -> anyhow::Result<Log> {
    open_log_keeping(data_dir, cache_bytes, reserve_from_env()?)
}

/// The reserve `ORCA_DISK_RESERVE_MIB` sets (as for `orca serve`), else the default: for the
/// verbs that open a stopped service's log, which keep the same room.
fn reserve_from_env() -> anyhow::Result<u64> {
    match std::env::var("ORCA_DISK_RESERVE_MIB") {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .map(|mib| mib.saturating_mul(1024 * 1024))
            .with_context(|| format!("ORCA_DISK_RESERVE_MIB={v:?} is not a number of MiB")),
        Err(_) => Ok(orca_log::RESERVE_BYTES),
    }
}

/// [`open_log`], keeping `reserve_bytes` free on the disk (see [`ServiceOptions::reserve_bytes`]).
pub fn open_log_keeping(
    data_dir: &std::path::Path,
    cache_bytes: u64,
    reserve_bytes: u64,
) -> anyhow::Result<Log> {
    let mut options = LogOptions::new(data_dir.join("log"));
    options.cache_capacity = cache_bytes;
    options.reserve_bytes = reserve_bytes;
    Log::open(&options).map_err(|e| {
        let hint = if e.is_storage_full() {
            " (the disk is full: free some space and start again; nothing is damaged)"
        } else if e.to_string().contains("lock") {
            " (is another orca service using this data dir?)"
        } else {
            ""
        };
        anyhow::Error::new(e).context(format!(
            "opening the event log in {}{hint}",
            data_dir.display()
        ))
    })
}

impl Service {
    /// Starts every component; returns once the endpoints are registered.
    pub async fn start(options: ServiceOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&options.data_dir)
            .with_context(|| format!("creating {}", options.data_dir.display()))?;
        // Recovery reads segments, and an open may wait for a lock a closed handle still holds:
        // blocking work, off the async workers.
        let (dir, cache, reserve) = (
            options.data_dir.clone(),
            options.cache_bytes,
            options.reserve_bytes,
        );
        let (log, views) = tokio::task::spawn_blocking(move || -> anyhow::Result<(Log, Views)> {
            let log = open_log_keeping(&dir, cache, reserve)?;
            let views = Views::open(&dir.join("views"), cache).context("opening the views")?;
            Ok((log, views))
        })
        .await??;
        let client = options.nats.connect("orca-service").await?;
        let js = async_nats::jetstream::new(client.clone());
        orca_nats::streams::ensure(&js, &options.bus.prefix)
            .await
            .context("creating the JetStream streams (is JetStream enabled on the server? `nats-server -js`)")?;
        orca_nats::notifier::ensure_stream(&js, &options.bus.prefix)
            .await
            .context("creating the notification stream")?;

        let checkpoint = options.data_dir.join("outbox").join("checkpoint");
        carry_over_checkpoint(&log, &checkpoint)?;
        // The group commit's threads write and fsync what the engine decides.
        let shared: SharedLog = Arc::new(DiskLog::start(
            log.clone(),
            GroupCommitOptions {
                max_batch: options.engine.max_batch.max(1) * 2,
            },
        )?);
        let (shutdown, rx) = watch::channel(false);
        let (drain, drained) = watch::channel(false);
        // The projector takes the engine's decided events from memory when it can.
        let feed = Feed::new();
        let mut engine_options = options.engine.clone();
        let tap = feed.clone();
        // So does the notifier, of the few events that may make a state transition.
        let notifier_feed = orca_nats::notifier::NotifierFeed::new();
        let notify_tap = notifier_feed.clone();
        engine_options.tap = Some(Tap::new(move |events: Vec<orca_proto::v1::Event>| {
            if let (Some(first), Some(last)) = (events.first(), events.last()) {
                notify_tap.push(
                    first.position,
                    last.position,
                    events
                        .iter()
                        .filter(|e| orca_nats::notifier::relevant(e))
                        .cloned(),
                );
            }
            tap.push(events)
        }));
        let (runs, schedule_runs) = tokio::sync::mpsc::unbounded_channel();
        engine_options.schedule_runs = Some(runs);
        let (engine_handle, engine) =
            Engine::spawn(shared.clone(), options.catalog.clone(), engine_options)?;
        // Stopped with the endpoints: it holds an engine handle too.
        let scheduler = tokio::spawn(orca_nats::run_schedules(
            schedule_runs,
            engine_handle.clone(),
            views.clone(),
            options.catalog.clone(),
            rx.clone(),
        ));
        let projector = tokio::spawn(
            Projector::new(shared.clone(), views.clone())
                .with_feed(feed)
                .run(drained.clone()),
        );
        // Its own connection: replies to commands never queue behind a burst of events.
        let outbox_client = options.nats.connect("orca-outbox").await?;
        let outbox = Outbox::new(
            shared.clone(),
            &checkpoint,
            async_nats::jetstream::new(outbox_client),
            OutboxOptions {
                prefix: options.bus.prefix.clone(),
                ..OutboxOptions::default()
            },
        )?;
        let published = outbox.published();
        let outbox = tokio::spawn(outbox.run(drained.clone()));
        let redispatcher = tokio::spawn(
            orca_nats::Redispatcher::new(
                shared.clone(),
                js.clone(),
                published.clone(),
                orca_nats::RedispatchOptions {
                    prefix: options.bus.prefix.clone(),
                    every: options.task_check_every,
                    ..Default::default()
                },
            )
            .run(rx.clone()),
        );
        let notifier_client = options.nats.connect("orca-notifier").await?;
        let notifier = orca_nats::Notifier::new(
            shared.clone(),
            async_nats::jetstream::new(notifier_client),
            orca_nats::NotifierOptions {
                prefix: options.bus.prefix.clone(),
                ..Default::default()
            },
        );
        let notifier = notifier.with_feed(notifier_feed);
        let notified = notifier.published();
        let notifier = tokio::spawn(async move {
            let r = notifier.run(drained).await;
            if let Err(e) = &r {
                tracing::error!(error = %e, "the notifier stopped; commands go on, notifications do not");
            }
            r
        });
        let backend = orca_nats::Backend {
            engine: engine_handle,
            views: views.clone(),
            log: shared,
            published: published.clone(),
            notified,
            catalog: options.catalog.clone(),
        };
        let endpoints = orca_nats::serve(client.clone(), backend, options.bus.clone(), rx).await?;
        client.flush().await.context("flushing NATS")?;
        tracing::info!(nats = %options.nats, data = %options.data_dir.display(), head = log.head(), "orca service started");
        Ok(Self {
            shutdown,
            drain,
            endpoints,
            scheduler,
            redispatcher,
            engine,
            projector,
            outbox,
            notifier,
            client,
            log,
            views,
            published,
        })
    }

    /// Stops taking requests, answers those in flight, lets the views, the outbox and the
    /// notifier catch up, and flushes: all within `grace`, NATS reachable or not. A part that
    /// overruns is stopped where it is (nothing is lost: the log has every event, and what is
    /// not published goes out at the next start); what was left is logged and returned.
    pub async fn stop(self, grace: Duration) -> anyhow::Result<Stopped> {
        let deadline = tokio::time::Instant::now() + grace;
        let mut left = Vec::new();
        let _ = self.shutdown.send(true);
        if !finish(self.endpoints, deadline).await {
            left.push("requests in flight were not all answered (NATS gone?)".to_owned());
        }
        finish(self.scheduler, deadline).await;
        finish(self.redispatcher, deadline).await;
        // The endpoints held the last engine handles: the engine ends after its replies.
        let mut engine = self.engine;
        match tokio::time::timeout_at(deadline, &mut engine).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "engine stopped with an error"),
            Ok(Err(e)) => tracing::error!(error = %e, "engine task failed"),
            Err(_) => {
                engine.abort();
                left.push("the engine's timer index was not kept (rebuilt from the log's tail at the next start)".to_owned());
            }
        }
        // Only now is every event that will be appended in the log: project and publish it all.
        let _ = self.drain.send(true);
        let mut projector = self.projector;
        match tokio::time::timeout_at(deadline, &mut projector).await {
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "projector stopped with an error"),
            Ok(_) => {}
            Err(_) => {
                projector.abort();
                left.push("the views did not catch up (they do at the next start)".to_owned());
            }
        }
        let (outbox_done, notifier_done) = tokio::join!(
            finish(self.outbox, deadline),
            finish(self.notifier, deadline)
        );
        let head = self.log.head();
        let published = *self.published.borrow();
        if !outbox_done || published < head {
            left.push(format!(
                "events after log position {published} (up to {head}) are not published yet; they go out at the next start"
            ));
        }
        if !notifier_done {
            left.push("notifications did not all go out; they do at the next start".to_owned());
        }
        self.views.flush()?;
        self.log.db().flush()?;
        // Flushing to a server that is gone would wait for it: a moment at most.
        let _ = tokio::time::timeout(Duration::from_millis(500), self.client.drain()).await;
        for what in &left {
            tracing::warn!("stopped within {grace:?}: {what}");
        }
        Ok(Stopped {
            head,
            published,
            left,
        })
    }

    /// Resolves when a component stops on its own (which only happens on failure).
    pub async fn failed(&mut self) -> String {
        tokio::select! {
            r = &mut self.engine => match r {
                Ok(Err(orca_engine::Error::Log(e))) if e.is_storage_full() => {
                    format!("the engine stopped: {e}{FULL_HINT}")
                }
                Ok(Err(e)) => format!("the engine stopped: {e}"),
                Ok(Ok(())) => "the engine stopped".into(),
                Err(e) => format!("the engine task failed: {e}"),
            },
            r = &mut self.projector => match r {
                Ok(Err(e)) if e.is_storage_full() => {
                    format!("the views could not be written: {e}{FULL_HINT}")
                }
                Ok(Err(e)) => format!("the projector stopped: {e}"),
                Ok(Ok(())) => "the projector stopped".into(),
                Err(e) => format!("the projector task failed: {e}"),
            },
            r = &mut self.outbox => match r {
                Ok(Err(e)) => format!("the outbox stopped: {e}"),
                Ok(Ok(())) => "the outbox stopped".into(),
                Err(e) => format!("the outbox task failed: {e}"),
            },
        }
    }
}

/// What a stop because the disk is full adds: it is not damage.
const FULL_HINT: &str = "; the disk is full (ENOSPC), nothing is damaged: free space and start \
     the service again (the log holds every acknowledged event)";

/// What a stop left undone, for the next start to do.
#[derive(Debug, Clone)]
pub struct Stopped {
    /// The log's head.
    pub head: u64,
    /// Position up to which events are published.
    pub published: u64,
    /// What was not done within the grace period, in words.
    pub left: Vec<String>,
}

/// Waits for `task` until `deadline`, and stops it there; whether it finished.
async fn finish<T>(mut task: JoinHandle<T>, deadline: tokio::time::Instant) -> bool {
    match tokio::time::timeout_at(deadline, &mut task).await {
        Ok(_) => true,
        Err(_) => {
            task.abort();
            false
        }
    }
}

/// Data dirs from before the outbox kept its checkpoint in a file of its own held it in the log's
/// index database (tree `outbox`, key `published`): carried over once, so that an upgrade
/// neither publishes from zero nor refuses a purged stream it did publish.
fn carry_over_checkpoint(log: &Log, file: &std::path::Path) -> anyhow::Result<()> {
    if file.exists() {
        return Ok(());
    }
    let old = log
        .db()
        .open_tree("outbox")
        .and_then(|t| t.get(b"published"))
        .context("reading the outbox checkpoint kept in the log's index")?;
    if let Some(at) = old.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok()) {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(file, at).with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_data_dirs_outbox_checkpoint_is_carried_over_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path(), 1 << 20).unwrap();
        let file = dir.path().join("outbox").join("checkpoint");
        carry_over_checkpoint(&log, &file).unwrap();
        assert!(!file.exists(), "nothing to carry over");
        log.db()
            .open_tree("outbox")
            .unwrap()
            .insert(b"published", &42u64.to_be_bytes())
            .unwrap();
        carry_over_checkpoint(&log, &file).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), 42u64.to_be_bytes());
        // The file, once there, is what counts.
        std::fs::write(&file, 43u64.to_be_bytes()).unwrap();
        carry_over_checkpoint(&log, &file).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), 43u64.to_be_bytes());
    }
}
