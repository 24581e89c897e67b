//! `orca.cmd.subscription.set_in_sync`: the operator's way back for an out-of-sync subscription.

use orca_proto::v1::{self, event::Body};

use super::{Checked, Command, Decide, Decision, Loaded, Meta, reason};
use crate::catalog::Catalog;
use crate::event::Env;
use crate::ids::SubscriptionId;
use crate::rejection::{Code, Rejection};

/// Put a subscription back in sync.
#[derive(Debug, Clone, PartialEq)]
pub struct SetInSync {
    /// The subscription.
    pub subscription_id: SubscriptionId,
    /// Why it may be trusted again.
    pub reason: String,
}

impl TryFrom<&v1::SetInSync> for Checked<Command> {
    type Error = Rejection;

    fn try_from(w: &v1::SetInSync) -> Result<Self, Rejection> {
        let subscription_id = SubscriptionId::parse("subscription_id", &w.subscription_id)?;
        let meta = Meta::parse(&w.command_id, &w.actor)?;
        let reason = reason(&w.reason, || format!("set in sync by {}", meta.actor))?;
        Ok(Checked {
            command: Command::SetInSync(SetInSync {
                subscription_id,
                reason,
            }),
            meta,
        })
    }
}

impl Decide for SetInSync {
    fn subscription_id(&self) -> Option<SubscriptionId> {
        Some(self.subscription_id)
    }

    /// Decides a set-in-sync: refused while a process holds the subscription (it may be changing
    /// it). One already in sync records the operator's word all the same, so that the command, like
    /// any other, is remembered by its id.
    fn decide(
        &self,
        _catalog: &Catalog,
        state: &Loaded,
        env: &mut Env<'_>,
    ) -> Result<Decision, Rejection> {
        let id = self.subscription_id;
        let sub = state
            .subscription
            .as_ref()
            .filter(|s| s.exists() && s.id == id)
            .ok_or_else(|| {
                Rejection::new(Code::SubscriptionNotFound, format!("no subscription {id}"))
            })?;
        if let Some(holder) = sub.locked_by {
            return Err(Rejection::new(
                Code::SubscriptionLocked,
                format!(
                    "subscription {id} is held by unfinished process {holder}; finish or abort it first"
                ),
            ));
        }
        let expected = vec![(sub.stream(), sub.version)];
        let mut sub = sub.clone();
        let event = env.event(
            sub.stream(),
            sub.version + 1,
            // The as-is is what the operator checked against the OSS/BSS.
            Body::SubscriptionSyncChanged(v1::SubscriptionSyncChanged {
                in_sync: true,
                reason: self.reason.clone(),
                version: sub.current().map_or(0, |v| v.number),
            }),
        );
        sub.evolve(&event);
        Ok(Decision {
            events: vec![event],
            expected,
            process: None,
            subscription: Some(sub),
            engine: None,
            schedule: None,
            transaction: None,
            order: None,
            task: None,
        })
    }
}
