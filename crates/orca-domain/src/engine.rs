//! The engine aggregate: whether it runs or is paused. One stream, [`ENGINE_STREAM`]; every
//! decision sees it, so a pause holds for every command decided after it, across restarts.

use orca_proto::Timestamp;
use orca_proto::v1::{self, event::Body};

/// The stream holding the engine's events.
pub const ENGINE_STREAM: &str = "engine-orca";

/// Whether the engine runs, as its events made it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EngineState {
    /// Paused: no process starts, no step starts, no timer fires.
    pub paused: bool,
    /// Why it was paused.
    pub reason: String,
    /// Who paused it.
    pub paused_by: String,
    /// When.
    pub since: Option<Timestamp>,
    /// Stream version.
    pub version: u64,
}

impl EngineState {
    /// Applies one of the engine's events.
    pub fn evolve(&mut self, event: &v1::Event) {
        match &event.body {
            Some(Body::EnginePaused(e)) => {
                self.paused = true;
                self.reason.clone_from(&e.reason);
                self.paused_by.clone_from(&event.actor);
                self.since = event.occurred_at;
            }
            Some(Body::EngineResumed(_)) => {
                self.paused = false;
                self.reason.clear();
                self.paused_by.clear();
                self.since = event.occurred_at;
            }
            _ => {}
        }
        self.version = event.version;
    }
}
