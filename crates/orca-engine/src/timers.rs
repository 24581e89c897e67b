//! The index of armed timers: every timer the log has armed and not yet disarmed (the domain's
//! [`event_timer_change`] says which events do which), in due order, so the engine knows when
//! to wake and what to fire; and the task attempts out with workers, per process (the domain's
//! [`task_change`]), which say whether a paused engine is still pausing. It follows the engine's
//! decisions as they are made, and is kept beside the log with the position it reflects: a
//! restart reads that and only the log's tail after it, never the whole log.

use std::collections::{BTreeSet, HashMap};

use orca_domain::ids::{self, OrderId, ProcessId};
use orca_domain::timer::{TaskChange, TimerChange, event_timer_change, key, task_change};
use orca_log::EventLog;
use orca_proto::{Timestamp, v1};

use crate::error::Error;

/// Name under which the index is kept beside the log.
const STATE: &str = "engine.timers";

/// What a kept index begins with: one without it (an older layout) is rebuilt from the log.
const MAGIC: &[u8; 8] = b"orca-ix2";

/// Events read at once while catching up on the log's tail.
const CHUNK: usize = 4096;

/// One armed timer: whose, which, when.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Armed {
    /// When it is due, as a sortable key.
    pub due: (i64, i32),
    /// Its process.
    pub process: ProcessId,
    /// Its id within the process.
    pub timer_id: String,
    /// Held while the engine is paused (the domain's `TimerWhat::held_by_pause`).
    pub held: bool,
}

impl Armed {
    /// When it is due.
    pub fn due(&self) -> Timestamp {
        Timestamp {
            seconds: self.due.0,
            nanos: self.due.1,
        }
    }
}

/// When a timer of a process is due, and whether a pause holds it.
type Slot = ((i64, i32), bool);

/// Armed timers in due order; see the module docs.
#[derive(Debug, Default)]
pub struct Timers {
    by_due: BTreeSet<Armed>,
    by_process: HashMap<ProcessId, HashMap<String, Slot>>,
    /// Steps whose task attempt is out with a worker, per process.
    out: HashMap<ProcessId, BTreeSet<u32>>,
    /// Timers whose firing could not take effect: not fired again until the next start (kept,
    /// so that the next start tries them once more).
    aside: BTreeSet<Armed>,
    /// Orders that have not ended: what a start or a resume moves on.
    orders: BTreeSet<OrderId>,
    /// Changed since last kept.
    pub dirty: bool,
}

impl Timers {
    /// Follows one event.
    pub fn apply(&mut self, event: &v1::Event) {
        match &event.body {
            Some(v1::event::Body::OrderSubmitted(_)) | Some(v1::event::Body::OrderEnded(_)) => {
                if let Some(order) = ids::split_stream(&event.stream)
                    .filter(|(kind, _)| *kind == "order")
                    .and_then(|(_, id)| OrderId::parse("order_id", id).ok())
                {
                    if matches!(event.body, Some(v1::event::Body::OrderSubmitted(_))) {
                        self.orders.insert(order);
                    } else {
                        self.orders.remove(&order);
                    }
                    self.dirty = true;
                }
                return;
            }
            _ => {}
        }
        if let Some(change) = event.body.as_ref().and_then(task_change)
            && let Some(process) = ids::split_stream(&event.stream)
                .filter(|(kind, _)| *kind == "process")
                .and_then(|(_, id)| ProcessId::parse("process_id", id).ok())
        {
            match change {
                TaskChange::Out(index) => {
                    self.out.entry(process).or_default().insert(index);
                    self.dirty = true;
                }
                TaskChange::Back(index) => {
                    if let Some(out) = self.out.get_mut(&process) {
                        out.remove(&index);
                        if out.is_empty() {
                            self.out.remove(&process);
                        }
                        self.dirty = true;
                    }
                }
                TaskChange::AllBack => {
                    self.dirty |= self.out.remove(&process).is_some();
                }
            }
        }
        let Some((process, change)) = event_timer_change(event) else {
            return;
        };
        match change {
            TimerChange::Arm(id, t) => {
                self.disarm(process, &id);
                let due = key(t.due);
                let held = t.what.held_by_pause();
                self.by_process
                    .entry(process)
                    .or_default()
                    .insert(id.clone(), (due, held));
                self.by_due.insert(Armed {
                    due,
                    process,
                    timer_id: id,
                    held,
                });
                self.dirty = true;
            }
            TimerChange::Disarm(id) => self.disarm(process, &id),
            TimerChange::DisarmAll => {
                for (id, (due, held)) in self.by_process.remove(&process).unwrap_or_default() {
                    let armed = Armed {
                        due,
                        process,
                        timer_id: id,
                        held,
                    };
                    self.aside.remove(&armed);
                    self.by_due.remove(&armed);
                    self.dirty = true;
                }
            }
        }
    }

    /// Drops one timer (one the log no longer arms, or whose firing was refused).
    pub fn disarm(&mut self, process: ProcessId, id: &str) {
        let Some(timers) = self.by_process.get_mut(&process) else {
            return;
        };
        if let Some((due, held)) = timers.remove(id) {
            let armed = Armed {
                due,
                process,
                timer_id: id.to_owned(),
                held,
            };
            self.aside.remove(&armed);
            self.by_due.remove(&armed);
            self.dirty = true;
        }
        if timers.is_empty() {
            self.by_process.remove(&process);
        }
    }

    /// The timer due first (of those not held, when `paused`, nor set aside).
    pub fn first(&self, paused: bool) -> Option<&Armed> {
        self.by_due.iter().find(|a| self.fires(a, paused))
    }

    /// Whether `a` fires when due: not while `paused` if a pause holds it, nor once set aside.
    fn fires(&self, a: &Armed, paused: bool) -> bool {
        let held = paused && a.held;
        !held && !self.aside.contains(a)
    }

    /// Sets aside a timer whose firing could not take effect (its decision was refused, or its
    /// events could not be recorded), so it is not fired over and over; the next start tries it
    /// again.
    pub fn set_aside(&mut self, armed: Armed) {
        self.aside.insert(armed);
    }

    /// Timers due at `now`, in due order, at most `limit` (none held, when `paused`).
    pub fn due_at(&self, now: Timestamp, limit: usize, paused: bool) -> Vec<Armed> {
        let now = key(now);
        self.by_due
            .iter()
            .take_while(|a| a.due <= now)
            .filter(|a| self.fires(a, paused))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Whether `armed` is still armed for its time.
    pub fn holds(&self, armed: &Armed) -> bool {
        self.by_due.contains(armed)
    }

    /// How many are armed.
    pub fn len(&self) -> usize {
        self.by_due.len()
    }

    /// Orders that have not ended.
    pub fn open_orders(&self) -> impl Iterator<Item = OrderId> + '_ {
        self.orders.iter().copied()
    }

    /// The steps whose task attempt is out with a worker, per process.
    pub fn out(&self) -> impl Iterator<Item = (ProcessId, &BTreeSet<u32>)> + '_ {
        self.out.iter().map(|(p, steps)| (*p, steps))
    }

    /// How many processes have a task attempt out with a worker.
    pub fn moving(&self) -> usize {
        self.out.len()
    }

    /// The index as of `position` (every event decided up to there applied), to keep beside
    /// the log with [`Timers::keep`] once `position` is durable.
    pub fn encode(&mut self, position: u64) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(
            28 + self.by_due.len() * 64 + self.orders.len() * 16 + self.out.len() * 24,
        );
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&position.to_be_bytes());
        let count = u32::try_from(self.by_due.len()).unwrap_or(u32::MAX);
        bytes.extend_from_slice(&count.to_be_bytes());
        for a in self.by_due.iter().take(count as usize) {
            bytes.extend_from_slice(&a.due.0.to_be_bytes());
            bytes.extend_from_slice(&a.due.1.to_be_bytes());
            bytes.extend_from_slice(a.process.0.as_bytes());
            bytes.push(u8::from(a.held));
            let id = a.timer_id.as_bytes();
            bytes.extend_from_slice(&u16::try_from(id.len()).unwrap_or(u16::MAX).to_be_bytes());
            bytes.extend_from_slice(id);
        }
        let orders = u32::try_from(self.orders.len()).unwrap_or(u32::MAX);
        bytes.extend_from_slice(&orders.to_be_bytes());
        for order in self.orders.iter().take(orders as usize) {
            bytes.extend_from_slice(order.0.as_bytes());
        }
        for (process, steps) in &self.out {
            bytes.extend_from_slice(process.0.as_bytes());
            let n = u16::try_from(steps.len()).unwrap_or(u16::MAX);
            bytes.extend_from_slice(&n.to_be_bytes());
            for index in steps.iter().take(usize::from(n)) {
                bytes.extend_from_slice(&index.to_be_bytes());
            }
        }
        self.dirty = false;
        bytes
    }

    /// Keeps an encoded index beside the log.
    pub fn keep(log: &dyn EventLog, bytes: &[u8]) -> Result<(), Error> {
        Ok(log.save_state(STATE, bytes)?)
    }

    /// The index as the log holds it now: what was kept, and the log's tail after it.
    pub fn recover(log: &dyn EventLog) -> Result<Self, Error> {
        let (mut timers, read) = Self::load(log)?;
        tracing::info!(armed = timers.len(), read, "timer index recovered");
        timers.dirty = true;
        Ok(timers)
    }

    /// The index as the log holds it now, saying nothing.
    pub fn load_quietly(log: &dyn EventLog) -> Result<Self, Error> {
        Ok(Self::load(log)?.0)
    }

    /// The index as the log holds it now, and how many of the log's events were read for it.
    fn load(log: &dyn EventLog) -> Result<(Self, u64), Error> {
        let head = log.head();
        let (mut timers, mut from) = match log.load_state(STATE)?.map(|b| Self::decode(&b)) {
            Some(Some((t, at))) if at <= head => (t, at + 1),
            Some(_) => {
                tracing::warn!(
                    "the kept timer index is unreadable or ahead of the log; rebuilding it from the log"
                );
                (Self::default(), 1)
            }
            None => (Self::default(), 1),
        };
        let start = from;
        while from <= head {
            let records = log.read_from(from, CHUNK)?;
            if records.is_empty() {
                break;
            }
            for r in &records {
                // Only process and order events touch the index; the others need no decoding.
                if !r.stream.starts_with("process-") && !r.stream.starts_with("order-") {
                    continue;
                }
                let e =
                    orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version)
                        .map_err(|e| Error::Corrupt(format!("event {}: {e}", r.position)))?;
                timers.apply(&e);
            }
            from = records.last().map_or(head, |r| r.position) + 1;
        }
        Ok((timers, head + 1 - start))
    }

    fn decode(bytes: &[u8]) -> Option<(Self, u64)> {
        let mut rest = bytes;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, tail) = rest.split_at_checked(n)?;
            rest = tail;
            Some(head)
        };
        if take(MAGIC.len())? != MAGIC {
            return None;
        }
        let position = u64::from_be_bytes(take(8)?.try_into().ok()?);
        let count = u32::from_be_bytes(take(4)?.try_into().ok()?);
        let mut timers = Self::default();
        for _ in 0..count {
            let secs = i64::from_be_bytes(take(8)?.try_into().ok()?);
            let nanos = i32::from_be_bytes(take(4)?.try_into().ok()?);
            let process = ProcessId(uuid::Uuid::from_slice(take(16)?).ok()?);
            let held = take(1)?.first().copied()? != 0;
            let len = usize::from(u16::from_be_bytes(take(2)?.try_into().ok()?));
            let id = String::from_utf8(take(len)?.to_vec()).ok()?;
            timers
                .by_process
                .entry(process)
                .or_default()
                .insert(id.clone(), ((secs, nanos), held));
            timers.by_due.insert(Armed {
                due: (secs, nanos),
                process,
                timer_id: id,
                held,
            });
        }
        let orders = u32::from_be_bytes(take(4)?.try_into().ok()?);
        for _ in 0..orders {
            timers
                .orders
                .insert(OrderId(uuid::Uuid::from_slice(take(16)?).ok()?));
        }
        while let Some(process) = take(16) {
            let process = ProcessId(uuid::Uuid::from_slice(process).ok()?);
            let n = u16::from_be_bytes(take(2)?.try_into().ok()?);
            let mut steps = BTreeSet::new();
            for _ in 0..n {
                steps.insert(u32::from_be_bytes(take(4)?.try_into().ok()?));
            }
            timers.out.insert(process, steps);
        }
        Some((timers, position))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use orca_log::{Append, MemLog, NewEvent};
    use v1::event::Body;

    fn set(process: u128, due: i64) -> v1::Event {
        v1::Event {
            stream: ProcessId(uuid::Uuid::from_u128(process)).stream(),
            body: Some(Body::TimerSet(v1::TimerSet {
                timer_id: "step/4".into(),
                due: Some(Timestamp {
                    seconds: due,
                    nanos: 0,
                }),
                what: "retry".into(),
                index: 4,
                attempt: 2,
            })),
            ..Default::default()
        }
    }

    fn append(log: &MemLog, e: &v1::Event) {
        let (done, _) = tokio::sync::oneshot::channel();
        log.append(vec![(
            Append {
                events: vec![NewEvent {
                    stream: e.stream.clone(),
                    payload: orca_proto::encode_stored_event(e),
                }],
                ..Default::default()
            },
            done,
        )]);
    }

    fn processes(t: &Timers) -> Vec<u128> {
        t.by_due.iter().map(|a| a.process.0.as_u128()).collect()
    }

    #[test]
    fn a_restart_reads_the_kept_index_and_only_the_logs_tail_after_it() {
        let log = MemLog::new();
        append(&log, &set(1, 10));
        // Nothing kept: the whole log is read.
        assert_eq!(processes(&Timers::recover(&log).unwrap()), [1]);

        // Kept as of position 1, holding another timer than the log there: the kept one counts
        // and position 1 is not read again.
        let mut kept = Timers::default();
        kept.apply(&set(2, 20));
        let bytes = kept.encode(1);
        Timers::keep(&log, &bytes).unwrap();
        append(&log, &set(3, 5));
        let t = Timers::recover(&log).unwrap();
        assert_eq!(processes(&t), [3, 2], "due order");
        assert_eq!(
            t.first(false).unwrap().due(),
            Timestamp {
                seconds: 5,
                nanos: 0
            }
        );
        assert_eq!(
            t.due_at(
                Timestamp {
                    seconds: 19,
                    nanos: 0
                },
                10,
                false
            )
            .len(),
            1
        );
        assert_eq!(
            t.due_at(
                Timestamp {
                    seconds: 99,
                    nanos: 0
                },
                1,
                false
            )
            .len(),
            1,
            "at most the limit"
        );
        // Retries are held while the engine is paused.
        assert!(t.first(true).is_none());

        // A kept index ahead of the log (a log restored from an older copy) is not trusted.
        let bytes = kept.encode(99);
        Timers::keep(&log, &bytes).unwrap();
        assert_eq!(processes(&Timers::recover(&log).unwrap()), [3, 1]);
    }

    #[test]
    fn the_step_ending_or_the_process_stopping_disarms() {
        let mut t = Timers::default();
        t.apply(&set(1, 10));
        t.apply(&set(2, 10));
        let mut done = set(1, 0);
        done.body = Some(Body::StepCompleted(v1::StepCompleted {
            index: 4,
            ..Default::default()
        }));
        t.apply(&done);
        assert_eq!(processes(&t), [2]);
        let mut failed = set(2, 0);
        failed.body = Some(Body::ProcessAborted(v1::ProcessAborted::default()));
        t.apply(&failed);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn open_orders_are_kept_and_an_ended_one_is_dropped() {
        let order = |n: u128, body: Body| v1::Event {
            stream: OrderId(uuid::Uuid::from_u128(n)).stream(),
            body: Some(body),
            ..Default::default()
        };
        let log = MemLog::new();
        let mut kept = Timers::default();
        kept.apply(&order(1, Body::OrderSubmitted(Default::default())));
        kept.apply(&order(2, Body::OrderSubmitted(Default::default())));
        kept.apply(&set(3, 10));
        Timers::keep(&log, &kept.encode(0)).unwrap();
        append(&log, &order(1, Body::OrderEnded(Default::default())));
        let t = Timers::recover(&log).unwrap();
        assert_eq!(
            t.open_orders().map(|o| o.0.as_u128()).collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(processes(&t), [3]);
        // An index kept in the layout before orders is not trusted: the log is read instead.
        Timers::keep(&log, &kept.encode(0)[MAGIC.len()..]).unwrap();
        assert_eq!(Timers::recover(&log).unwrap().open_orders().count(), 0);
    }
}
