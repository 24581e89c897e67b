//! What can go wrong in the engine.

/// Why the engine could not take or finish a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine has stopped.
    #[error("engine stopped")]
    Closed,
    /// The log failed; the engine stops rather than diverge from what is durable.
    #[error(transparent)]
    Log(#[from] orca_log::Error),
    /// A stored event or reply does not decode.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}
