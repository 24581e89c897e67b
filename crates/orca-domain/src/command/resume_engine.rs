//! `orca.cmd.engine.resume`: go on after a pause.

use orca_proto::v1::{self, event::Body};

use super::pause_engine::record_engine;
use super::{Checked, Command, Decide, Decision, Loaded, Meta};
use crate::catalog::Catalog;
use crate::event::Env;
use crate::rejection::Rejection;

/// Resume the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumeEngine;

impl TryFrom<&v1::ResumeEngine> for Checked<Command> {
    type Error = Rejection;

    fn try_from(w: &v1::ResumeEngine) -> Result<Self, Rejection> {
        Ok(Checked {
            command: Command::ResumeEngine(ResumeEngine),
            meta: Meta::parse(&w.command_id, &w.actor)?,
        })
    }
}

impl Decide for ResumeEngine {
    /// Decides a resume: recorded if the engine is paused (otherwise nothing changes). What was
    /// held back then runs: the engine fires the timers that came due, among them each held-back
    /// process's `continue`.
    fn decide(
        &self,
        _catalog: &Catalog,
        state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection> {
        if !state.engine.paused {
            return Ok(Decision::default());
        }
        Ok(record_engine(
            state,
            Body::EngineResumed(v1::EngineResumed {}),
            env,
        ))
    }
}
