use std::time::Duration;

use orca_log::{ReadLog, SharedReader};
use orca_proto::v1;
use tokio::sync::watch;

use crate::feed::Feed;
use crate::store::{Error, PERSIST_EVERY, Views};

/// Events projected per batch.
const CHUNK: usize = 2048;

/// Longest the projector waits for the engine to hand over an event the log already holds.
const FEED_WAIT: Duration = Duration::from_millis(5);

/// Follows the log and keeps the views up to date.
pub struct Projector {
    log: SharedReader,
    views: Views,
    feed: Option<Feed>,
}

fn decode(log: &dyn ReadLog, from: u64) -> Result<Vec<v1::Event>, Error> {
    log.read_from(from, CHUNK)?
        .iter()
        .map(|r| {
            orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version)
                .map_err(|e| Error::Corrupt(format!("event {}: {e}", r.position)))
        })
        .collect()
}

/// Projects the whole log into `views` (a fresh store rebuilds from zero). Returns the position
/// reached.
pub fn rebuild(log: &dyn ReadLog, views: &Views) -> Result<u64, Error> {
    rebuild_with(log, views, &mut |_| {})
}

/// [`rebuild`], telling `progress` the position reached after every chunk: for a progress bar.
pub fn rebuild_with(
    log: &dyn ReadLog,
    views: &Views,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, Error> {
    loop {
        let events = decode(log, views.checkpoint() + 1)?;
        if events.is_empty() {
            return Ok(views.checkpoint());
        }
        views.apply(&events, log)?;
        progress(views.checkpoint());
    }
}

impl Projector {
    /// A projector from `log` into `views`.
    pub fn new(log: SharedReader, views: Views) -> Self {
        Self {
            log,
            views,
            feed: None,
        }
    }

    /// Takes events from `feed` when it holds them instead of reading them from the log.
    pub fn with_feed(mut self, feed: Feed) -> Self {
        self.feed = Some(feed);
        self
    }

    /// Projects until `shutdown` turns true, waking whenever the log's head moves.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), Error> {
        let mut head = self.log.subscribe();
        loop {
            // Catch up in chunks off the async threads: sled reads and decoding are CPU work.
            if let Some(feed) = &self.feed {
                // Everything durable so far, so that chunks stay as large as the log's.
                let from = self.views.checkpoint() + 1;
                feed.wait_for(from, self.log.head(), FEED_WAIT).await;
            }
            let (log, views, feed) = (self.log.clone(), self.views.clone(), self.feed.clone());
            let caught_up = tokio::task::spawn_blocking(move || -> Result<bool, Error> {
                let from = views.checkpoint() + 1;
                let head = log.head();
                let fed = feed.map(|f| f.take(from, head, CHUNK));
                let events = match fed {
                    Some(events) if !events.is_empty() => events,
                    _ => decode(log.as_ref(), from)?,
                };
                let done = events.last().is_none_or(|e| e.position >= head);
                views.apply(&events, log.as_ref())?;
                Ok(done)
            })
            .await
            .map_err(|e| Error::Corrupt(format!("projector task: {e}")))??;
            if !caught_up {
                continue;
            }
            if *shutdown.borrow() {
                return Ok(());
            }
            tokio::select! {
                changed = head.changed() => if changed.is_err() { return Ok(()) },
                _ = shutdown.changed() => {}
                // Quiet: what waits in memory goes to sled.
                _ = tokio::time::sleep(PERSIST_EVERY) => {
                    if self.views.persist_due() {
                        let views = self.views.clone();
                        tokio::task::spawn_blocking(move || views.persist())
                            .await
                            .map_err(|e| Error::Corrupt(format!("projector task: {e}")))??;
                    }
                }
            }
        }
    }
}
