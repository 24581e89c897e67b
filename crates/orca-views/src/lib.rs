//! Read models built from the log: the subscription view and the process view.
//!
//! [`Views`] keeps them in their own sled database. Changes gather in memory and go to sled a few
//! times a second, the checkpoint after them; reads join both. [`Projector`]
//! follows the log from the checkpoint and folds
//! events with the domain's own `evolve`, so a view rebuilt from position zero ([`rebuild`]) is
//! byte-for-byte the live one. Views are derived: they are never fsynced, and a crash only means
//! projecting again from the checkpoint.

mod feed;
mod projector;
mod store;

pub use feed::Feed;
pub use projector::{Projector, rebuild, rebuild_with};
pub use store::{Dump, Error, PERSIST_EVERY, Page, ProcessFilter, SubscriptionFilter, Views};
