//! Subscription lifecycle states and the edges between them.

use std::fmt;
use std::str::FromStr;

/// A subscription's lifecycle status, with orchestrator-core's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Lifecycle {
    /// Just created; nothing provisioned.
    #[default]
    Initial,
    /// Being provisioned in the OSS/BSS.
    Provisioning,
    /// In service; modify and terminate workflows may run.
    Active,
    /// Temporarily out of service.
    Disabled,
    /// Ended; final.
    Terminated,
}

impl Lifecycle {
    /// Every state, in lifecycle order.
    pub const ALL: [Lifecycle; 5] = [
        Lifecycle::Initial,
        Lifecycle::Provisioning,
        Lifecycle::Active,
        Lifecycle::Disabled,
        Lifecycle::Terminated,
    ];

    /// The wire and catalog name.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Initial => "initial",
            Lifecycle::Provisioning => "provisioning",
            Lifecycle::Active => "active",
            Lifecycle::Disabled => "disabled",
            Lifecycle::Terminated => "terminated",
        }
    }

    /// Whether a subscription may move from `self` to `to`.
    ///
    /// Initial goes to provisioning (or straight to active when nothing needs provisioning);
    /// provisioning to active; active and disabled toggle; anything but terminated may be
    /// terminated; terminated is final.
    pub fn can_move_to(self, to: Lifecycle) -> bool {
        use Lifecycle::*;
        matches!(
            (self, to),
            (Initial, Provisioning)
                | (Initial, Active)
                | (Provisioning, Active)
                | (Active, Disabled)
                | (Disabled, Active)
                | (Initial | Provisioning | Active | Disabled, Terminated)
        )
    }
}

impl FromStr for Lifecycle {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Lifecycle::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown lifecycle state {s:?} (initial, provisioning, active, disabled, terminated)")
            })
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Lifecycle::*;

    #[test]
    fn terminated_is_final_and_initial_cannot_be_reentered() {
        for l in super::Lifecycle::ALL {
            assert!(!Terminated.can_move_to(l));
            assert!(!l.can_move_to(Initial));
        }
        assert!(Initial.can_move_to(Provisioning));
        assert!(Provisioning.can_move_to(Active));
        assert!(Active.can_move_to(Terminated));
        assert!(!Active.can_move_to(Provisioning));
    }
}
