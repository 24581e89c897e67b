//! The JetStream streams orca publishes to.
//!
//! Only options nats-server 2.9 knows are set (it ignores newer ones silently, which would make
//! behaviour differ between servers).

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::Error;

pub use orca_proto::{events_stream, tasks_stream};

/// How long the task work queue remembers a task's `Nats-Msg-Id` to drop a re-publication. The
/// outbox republishes only what was not acknowledged, right after a reconnect or restart; every
/// id in the window costs the server memory at thousands of tasks per second.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(30);

/// The event stream's duplicate window: the shortest, since nothing there is deduplicated by id
/// (each event expects its predecessor's sequence and id, which refuses a duplicate).
pub const EVENTS_DUPLICATE_WINDOW: Duration = Duration::from_secs(1);

/// Creates (or finds) the event stream `<prefix>.evt.>` and the task work queue `<prefix>.task.>`.
pub async fn ensure(js: &jetstream::Context, prefix: &str) -> Result<(), Error> {
    js.get_or_create_stream(stream::Config {
        name: events_stream(prefix),
        subjects: vec![format!("{prefix}.evt.>")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: EVENTS_DUPLICATE_WINDOW,
        ..Default::default()
    })
    .await
    .map_err(Error::nats)?;
    js.get_or_create_stream(stream::Config {
        name: tasks_stream(prefix),
        subjects: vec![format!("{prefix}.task.>")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::WorkQueue,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    })
    .await
    .map_err(Error::nats)?;
    Ok(())
}
