//! The subscription aggregate: its versions, how its events change them, and what its state
//! allows.
//!
//! A subscription is identified by id and version (TMF638 with versions). Its create process
//! builds version 1, active from the start (there is no as-is to keep; its lifecycle state says
//! how far the create got); a modify or terminate process builds version N+1 as *pending* (the to-be)
//! while the *active* version N (the as-is) stays what a reader gets. When the process completes,
//! N+1 becomes active and N is superseded (terminated); when it is aborted, N+1 is discarded.
//! Only one version is ever active. Validate and system processes change the active version in
//! place. A subscription recorded before versions has one version, active from its creation and
//! changed in place.
//!
//! The state keeps the versions a decision can touch (the active and the pending one) and the
//! one retired last, so that the views can write its final state; the history of every version
//! is in the views and in the log.

use std::fmt;
use std::str::FromStr;

use crate::catalog::Product;
use crate::ids::{ProcessId, SubscriptionId};
use crate::lifecycle::Lifecycle;
use orca_proto::v1::{self, event::Body};
use orca_proto::{Struct, Timestamp};

/// A version's part in its subscription's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VersionState {
    /// Being built by a running process: the to-be.
    #[default]
    Pending,
    /// The as-is: what a reader gets. Only one version is.
    Active,
    /// Terminated when the next version became active.
    Superseded,
    /// Its process was aborted before it became active.
    Discarded,
}

impl VersionState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::Pending => "pending",
            VersionState::Active => "active",
            VersionState::Superseded => "superseded",
            VersionState::Discarded => "discarded",
        }
    }
}

impl fmt::Display for VersionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One version of a subscription, as its events made it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubscriptionVersion {
    /// Its number, from 1.
    pub number: u32,
    /// Its part: pending, active, superseded or discarded.
    pub state: VersionState,
    /// Its lifecycle state.
    pub status: Lifecycle,
    /// Human description.
    pub description: String,
    /// Free-text note.
    pub note: String,
    /// Resource values per product block, in the product's block order.
    pub blocks: Vec<(String, Struct)>,
    /// Whether it agrees with the OSS/BSS; only validate and system workflows start on an
    /// active version that does not.
    pub in_sync: bool,
    /// Why `in_sync` last changed.
    pub sync_reason: String,
    /// When it went active in its lifecycle first.
    pub start_date: Option<Timestamp>,
    /// When it was terminated.
    pub end_date: Option<Timestamp>,
    /// The process that built it.
    pub activator: Option<ProcessId>,
    /// The process whose version superseded it.
    pub terminator: Option<ProcessId>,
    /// When it was opened.
    pub opened_at: Option<Timestamp>,
    /// When it became the active version.
    pub activated_at: Option<Timestamp>,
}

impl SubscriptionVersion {
    /// A resource's value, if set.
    pub fn resource(&self, block: &str, name: &str) -> Option<&orca_proto::Value> {
        self.blocks
            .iter()
            .find(|(b, _)| b == block)
            .and_then(|(_, r)| r.fields.get(name))
            .filter(|v| {
                !matches!(
                    v.kind,
                    None | Some(orca_proto::google::protobuf::value::Kind::NullValue(_))
                )
            })
    }

    /// Mandatory resources of `state` that the version lacks, as `block.resource`.
    pub fn missing_for(&self, product: &Product, state: Lifecycle) -> Vec<String> {
        product
            .mandatory
            .get(&state)
            .into_iter()
            .flatten()
            .filter(|(block, res)| self.resource(block, res).is_none())
            .map(|(block, res)| format!("{block}.{res}"))
            .collect()
    }

    /// Applies a change of its data.
    fn change(&mut self, body: &Body, at: Option<Timestamp>) {
        match body {
            Body::SubscriptionDescriptionChanged(e) => self.description.clone_from(&e.description),
            Body::SubscriptionResourcesChanged(e) => {
                let values = e.values.clone().unwrap_or_default();
                match self.blocks.iter_mut().find(|(name, _)| *name == e.block) {
                    Some((_, resources)) => resources.fields.extend(values.fields),
                    None => self.blocks.push((e.block.clone(), values)),
                }
            }
            Body::SubscriptionStatusChanged(e) => {
                if let Ok(to) = Lifecycle::from_str(&e.to) {
                    self.status = to;
                    if to == Lifecycle::Active && self.start_date.is_none() {
                        self.start_date = at;
                    }
                    if to == Lifecycle::Terminated {
                        self.end_date = at;
                    }
                }
            }
            Body::SubscriptionSyncChanged(e) => {
                self.in_sync = e.in_sync;
                self.sync_reason.clone_from(&e.reason);
            }
            Body::SubscriptionNoteChanged(e) => self.note.clone_from(&e.note),
            _ => {}
        }
    }
}

/// A customer's instance of a product, as its events made it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubscriptionState {
    /// Its id.
    pub id: SubscriptionId,
    /// Product name.
    pub product: String,
    /// Customer id.
    pub customer_id: String,
    /// The as-is version.
    pub active: Option<SubscriptionVersion>,
    /// The to-be version a running process builds, if one does.
    pub pending: Option<SubscriptionVersion>,
    /// The version the last activation superseded or the last abort discarded.
    pub retired: Option<SubscriptionVersion>,
    /// How many versions it has had.
    pub versions: u32,
    /// The unfinished process holding it.
    pub locked_by: Option<ProcessId>,
    /// Every process recorded against it (the administrative trail).
    pub processes: Vec<v1::ProcessLink>,
    /// Stream version (0: it does not exist).
    pub version: u64,
    /// When it was created.
    pub created_at: Option<Timestamp>,
    /// When its last event happened.
    pub updated_at: Option<Timestamp>,
    /// Log position of its last event.
    pub position: u64,
}

/// Makes a data event change version `number`.
pub(crate) fn stamp_version(body: &mut Body, number: u32) {
    match body {
        Body::SubscriptionDescriptionChanged(e) => e.version = number,
        Body::SubscriptionResourcesChanged(e) => e.version = number,
        Body::SubscriptionStatusChanged(e) => e.version = number,
        Body::SubscriptionSyncChanged(e) => e.version = number,
        Body::SubscriptionNoteChanged(e) => e.version = number,
        _ => {}
    }
}

/// The version number a data event names (0 in one recorded before versions).
fn changed_version(body: &Body) -> Option<u32> {
    match body {
        Body::SubscriptionDescriptionChanged(e) => Some(e.version),
        Body::SubscriptionResourcesChanged(e) => Some(e.version),
        Body::SubscriptionStatusChanged(e) => Some(e.version),
        Body::SubscriptionSyncChanged(e) => Some(e.version),
        Body::SubscriptionNoteChanged(e) => Some(e.version),
        _ => None,
    }
}

impl SubscriptionState {
    /// Whether the subscription exists (has events).
    pub fn exists(&self) -> bool {
        self.version > 0
    }

    /// The stream holding its events.
    pub fn stream(&self) -> String {
        self.id.stream()
    }

    /// What a reader gets by default: the active version.
    pub fn current(&self) -> Option<&SubscriptionVersion> {
        self.active
            .as_ref()
            .or(self.pending.as_ref())
            .or(self.retired.as_ref())
    }

    /// The version process `pid` changes: the one it builds, else the active one (a validate or
    /// system process changes it in place), else what a reader gets.
    pub fn working(&self, pid: ProcessId) -> Option<&SubscriptionVersion> {
        match &self.pending {
            Some(p) if p.activator == Some(pid) => Some(p),
            _ => self.active.as_ref().or_else(|| self.current()),
        }
    }

    /// The version numbered `number`, while the state holds it.
    pub fn version_numbered(&self, number: u32) -> Option<&SubscriptionVersion> {
        [&self.active, &self.pending, &self.retired]
            .into_iter()
            .flatten()
            .find(|v| v.number == number)
    }

    /// The versions `body`, an event just applied, changed (a lock taken or released changes
    /// the subscription, none of its versions).
    pub fn touched_by(&self, body: &Body) -> Vec<u32> {
        match body {
            Body::SubscriptionCreated(_) => vec![1],
            Body::SubscriptionVersionOpened(e) => vec![e.version],
            Body::SubscriptionVersionActivated(e) if e.superseded > 0 => {
                vec![e.version, e.superseded]
            }
            Body::SubscriptionVersionActivated(e) => vec![e.version],
            Body::SubscriptionVersionDiscarded(e) => vec![e.version],
            other => match changed_version(other) {
                Some(0) => self.current().map(|v| v.number).into_iter().collect(),
                Some(n) => vec![n],
                None => Vec::new(),
            },
        }
    }

    fn numbered_mut(&mut self, number: u32) -> Option<&mut SubscriptionVersion> {
        [&mut self.active, &mut self.pending, &mut self.retired]
            .into_iter()
            .flatten()
            .find(|v| v.number == number)
    }

    /// The subscription as a reader got it right after log position `position` (0: no limit) or
    /// at `time`, folded from its stream's `events` in order. A position inside a command's
    /// events stands for the command's end: readers never saw what lay between them (they share
    /// its time, so a time never splits them). Stops reading at the first event past the limit.
    pub fn as_of<E>(
        events: impl IntoIterator<Item = Result<v1::Event, E>>,
        position: u64,
        time: Option<Timestamp>,
    ) -> Result<Self, E> {
        let key = |t: &Timestamp| (t.seconds, t.nanos);
        let mut state = Self::default();
        let mut last_command = String::new();
        for e in events {
            let e = e?;
            let same_command = !e.command_id.is_empty() && e.command_id == last_command;
            if position > 0 && e.position > position && !same_command {
                break;
            }
            if let (Some(limit), Some(at)) = (&time, &e.occurred_at)
                && key(at) > key(limit)
            {
                break;
            }
            last_command.clone_from(&e.command_id);
            state.evolve(&e);
        }
        Ok(state)
    }

    /// Applies one of the subscription's events. Pure and total: replaying a stream rebuilds it.
    pub fn evolve(&mut self, event: &v1::Event) {
        let at = event.occurred_at;
        match &event.body {
            Some(Body::SubscriptionCreated(e)) => {
                self.id = SubscriptionId::parse("subscription_id", &e.subscription_id)
                    .unwrap_or_default();
                self.product.clone_from(&e.product);
                self.customer_id.clone_from(&e.customer_id);
                self.active = Some(SubscriptionVersion {
                    number: 1,
                    state: VersionState::Active,
                    status: Lifecycle::from_str(&e.status).unwrap_or_default(),
                    in_sync: false,
                    sync_reason: "new: in sync once its create workflow resyncs it".into(),
                    blocks: e
                        .blocks
                        .iter()
                        .map(|b| (b.name.clone(), b.resources.clone().unwrap_or_default()))
                        .collect(),
                    activator: ProcessId::parse("process_id", &e.process_id).ok(),
                    opened_at: at,
                    activated_at: at,
                    ..SubscriptionVersion::default()
                });
                self.versions = 1;
                self.created_at = at;
            }
            Some(Body::SubscriptionVersionOpened(e)) => {
                if let Some(active) = &self.active {
                    self.pending = Some(SubscriptionVersion {
                        number: e.version,
                        state: VersionState::Pending,
                        activator: ProcessId::parse("process_id", &e.process_id).ok(),
                        terminator: None,
                        opened_at: at,
                        activated_at: None,
                        ..active.clone()
                    });
                    self.versions = self.versions.max(e.version);
                }
            }
            Some(Body::SubscriptionVersionActivated(e)) => {
                if let Some(mut next) = self.pending.take_if(|p| p.number == e.version) {
                    let by = ProcessId::parse("process_id", &e.process_id).ok();
                    if let Some(mut old) = self.active.take() {
                        old.state = VersionState::Superseded;
                        old.terminator = by;
                        if old.status != Lifecycle::Terminated {
                            old.status = Lifecycle::Terminated;
                            old.end_date = at;
                        }
                        self.retired = Some(old);
                    }
                    next.state = VersionState::Active;
                    next.activated_at = at;
                    self.active = Some(next);
                }
            }
            Some(Body::SubscriptionVersionDiscarded(e)) => {
                if let Some(mut gone) = self.pending.take_if(|p| p.number == e.version) {
                    gone.state = VersionState::Discarded;
                    self.retired = Some(gone);
                }
            }
            Some(Body::SubscriptionProcessLinked(e)) => {
                self.locked_by = ProcessId::parse("process_id", &e.process_id).ok();
                self.processes.push(v1::ProcessLink {
                    process_id: e.process_id.clone(),
                    workflow: e.workflow.clone(),
                    target: e.target.clone(),
                    linked_at: at,
                });
            }
            Some(Body::SubscriptionProcessReleased(e))
                if self
                    .locked_by
                    .is_some_and(|p| p.to_string() == e.process_id) =>
            {
                self.locked_by = None;
            }
            Some(body) => {
                if let Some(number) = changed_version(body) {
                    // 0: recorded before versions, when the one version changed in place.
                    let target = match number {
                        0 => self.active.as_mut().or(self.pending.as_mut()),
                        n => self.numbered_mut(n),
                    };
                    if let Some(v) = target {
                        v.change(body, at);
                    }
                }
            }
            // Events of other aggregates never reach a subscription stream.
            None => {}
        }
        self.version = event.version;
        self.position = event.position;
        self.updated_at = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: u64, command: &str, seconds: i64, body: Body) -> Result<v1::Event, ()> {
        Ok(v1::Event {
            position,
            version: position,
            command_id: command.into(),
            occurred_at: Some(Timestamp { seconds, nanos: 0 }),
            body: Some(body),
            ..Default::default()
        })
    }

    fn renamed(description: &str) -> Body {
        Body::SubscriptionDescriptionChanged(v1::SubscriptionDescriptionChanged {
            description: description.into(),
            version: 1,
        })
    }

    #[test]
    fn as_of_a_position_inside_a_command_is_its_end_and_a_time_takes_what_happened_by_then() {
        let id = uuid::Uuid::from_u128(7).to_string();
        let created = Body::SubscriptionCreated(v1::SubscriptionCreated {
            subscription_id: id,
            version: 1,
            ..Default::default()
        });
        let events = || {
            vec![
                event(1, "a", 10, created.clone()),
                event(2, "b", 20, renamed("first")),
                event(3, "b", 20, renamed("second")),
                event(4, "c", 30, renamed("third")),
            ]
        };
        let description = |position, time| {
            SubscriptionState::as_of(events(), position, time)
                .unwrap()
                .current()
                .map(|v| v.description.clone())
        };
        assert_eq!(description(1, None), Some(String::new()));
        // Position 2 is inside command b: as of it, b has happened whole.
        assert_eq!(description(2, None), Some("second".into()));
        assert_eq!(description(0, None), Some("third".into()));
        let at = |seconds| Some(Timestamp { seconds, nanos: 0 });
        assert_eq!(description(0, at(25)), Some("second".into()));
        assert_eq!(description(0, at(5)), None, "it did not exist yet");
    }
}
