//! `orca.cmd.engine.pause`: stop starting processes and steps, for maintenance.

use orca_proto::v1::{self, event::Body};

use super::{Checked, Command, Decide, Decision, Loaded, Meta, reason};
use crate::catalog::Catalog;
use crate::engine::ENGINE_STREAM;
use crate::event::Env;
use crate::rejection::Rejection;

/// Pause the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct PauseEngine {
    /// Why.
    pub reason: String,
}

impl TryFrom<&v1::PauseEngine> for Checked<Command> {
    type Error = Rejection;

    fn try_from(w: &v1::PauseEngine) -> Result<Self, Rejection> {
        Ok(Checked {
            command: Command::PauseEngine(PauseEngine {
                reason: reason(&w.reason, || "paused by an operator".into())?,
            }),
            meta: Meta::parse(&w.command_id, &w.actor)?,
        })
    }
}

impl Decide for PauseEngine {
    /// Decides a pause: recorded unless the engine is paused already (then nothing changes).
    fn decide(
        &self,
        _catalog: &Catalog,
        state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection> {
        if state.engine.paused {
            return Ok(Decision::default());
        }
        let body = Body::EnginePaused(v1::EnginePaused {
            reason: self.reason.clone(),
        });
        Ok(record_engine(state, body, env))
    }
}

/// A decision recording `body` on the engine's stream, decided on its state in `state`.
pub(super) fn record_engine(state: &Loaded, body: Body, env: &mut Env<'_>) -> Decision {
    let event = env.event(ENGINE_STREAM.into(), state.engine.version + 1, body);
    let mut engine = state.engine.clone();
    engine.evolve(&event);
    Decision {
        expected: vec![(ENGINE_STREAM.into(), state.engine.version)],
        events: vec![event],
        engine: Some(engine),
        ..Decision::default()
    }
}
