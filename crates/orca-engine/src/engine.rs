use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use orca_domain::command::{ArmSchedule, FireSchedule, FireTimer};
use orca_domain::engine::{ENGINE_STREAM, EngineState};
use orca_domain::ids::{OrderId, ProcessId, SubscriptionId};
use orca_domain::order::OrderState;
use orca_domain::schedule::{ScheduleState, schedule_stream};
use orca_domain::{
    Catalog, Checked, Code, Command, Decision, Env, Loaded, Meta, ProcessState, Rejection,
    SubscriptionState,
};
use orca_log::{Append, AppendOutcome, Expected, NewEvent, SharedLog};
use orca_proto::{Message, Timestamp, v1};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::cache::Cache;
pub use crate::error::Error;
use crate::timers::Timers;

/// How often the timer index is kept beside the log while it changes.
const KEEP_TIMERS_EVERY: Duration = Duration::from_secs(1);

/// Largest encoded event a command may record: published events must fit NATS's default 1 MiB
/// message with room for headers.
pub const MAX_EVENT_BYTES: usize = 512 * 1024;

/// Sees every event the engine decides, with its log position, in log order, once it is durable
/// where the engine decided it would land: lets a reader in the same process skip reading and
/// decoding what the engine already holds.
#[derive(Clone)]
pub struct Tap(Arc<dyn Fn(Vec<v1::Event>) + Send + Sync>);

impl Tap {
    /// A tap calling `f` with each command's events.
    pub fn new(f: impl Fn(Vec<v1::Event>) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tap")
    }
}

/// The time the engine decides at: what `Env::now` is and what timers are due by.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Timestamp + Send + Sync>);

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Self(Arc::new(now))
    }

    /// A clock that reads `f` (tests move time by hand with one).
    pub fn new(f: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The time now.
    pub fn now(&self) -> Timestamp {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// How the engine batches and how much it keeps in memory.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Most commands decided per batch (default 1024).
    pub max_batch: usize,
    /// Subscriptions and processes kept in memory, each (default 10,000). A miss folds the
    /// stream from the log, so this bounds memory, not correctness.
    pub cache_capacity: usize,
    /// Commands waiting for the engine before senders are slowed down (default 8192).
    pub queue: usize,
    /// Appends decided but not yet durable before the engine waits for the disk (default 8192).
    pub max_in_flight: usize,
    /// Where decided events go besides the log (default none).
    pub tap: Option<Tap>,
    /// The time commands are decided at and timers come due by (default: the system's).
    pub clock: Clock,
    /// Longest the engine sleeps before it looks at the clock again while timers are armed
    /// (default 1 s): a clock that jumps is noticed within it.
    pub timer_nap: Duration,
    /// Where the runs of schedules that fired go, to start their processes (default none: they
    /// are recorded, and started by nobody).
    pub schedule_runs: Option<mpsc::UnboundedSender<ScheduleRun>>,
}

/// A schedule fired: its workflow is to start on every subscription it matches, and the run
/// finished with [`FinishScheduleRun`](orca_domain::command::FinishScheduleRun).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRun {
    /// The schedule.
    pub name: String,
    /// The run's due time.
    pub due: Timestamp,
    /// Log position of its firing: the subscriptions it runs on are those the views hold then.
    pub position: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_batch: 1024,
            cache_capacity: 10_000,
            queue: 8192,
            max_in_flight: 8192,
            tap: None,
            clock: Clock::system(),
            timer_nap: Duration::from_secs(1),
            schedule_runs: None,
        }
    }
}

struct Request {
    command: Checked<Command>,
    reply: oneshot::Sender<v1::CommandReply>,
}

/// Sends commands to the engine; cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Request>,
    status: watch::Receiver<EngineStatus>,
    schedules: watch::Receiver<BTreeMap<String, ScheduleState>>,
}

impl EngineHandle {
    /// Whether the engine runs, as of its last batch.
    pub fn status(&self) -> EngineStatus {
        self.status.borrow().clone()
    }

    /// Where each schedule of the catalog stands.
    pub fn schedules(&self) -> BTreeMap<String, ScheduleState> {
        self.schedules.borrow().clone()
    }

    /// Decides a command; resolves once its events are durable (or it was rejected).
    pub async fn submit(&self, command: Checked<Command>) -> Result<v1::CommandReply, Error> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { command, reply })
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }
}

enum Pending {
    Ready(v1::CommandReply, oneshot::Sender<v1::CommandReply>),
    /// Answered once everything queued before it is.
    Barrier(oneshot::Sender<()>),
    Commit {
        durable: oneshot::Receiver<AppendOutcome>,
        reply: v1::CommandReply,
        last: u64,
        to: oneshot::Sender<v1::CommandReply>,
        /// For the tap, positions set (empty without a tap).
        events: Vec<v1::Event>,
        /// Schedule runs the decision fired: handed on once they are durable.
        runs: Vec<ScheduleRun>,
        _permit: OwnedSemaphorePermit,
    },
}

/// The decider. Owns the in-memory state; see the crate docs.
pub struct Engine {
    log: SharedLog,
    catalog: Arc<Catalog>,
    options: EngineOptions,
    subscriptions: Cache<SubscriptionId, SubscriptionState>,
    processes: Cache<ProcessId, ProcessState>,
    orders: Cache<OrderId, OrderState>,
    recent: Cache<String, v1::CommandReply>,
    next_position: u64,
    /// Set when an append did not land as decided: memory and disk may differ, so stop.
    failed: watch::Sender<bool>,
    /// Set when an append found the disk full: what was decided since is forgotten, and the
    /// engine goes on from the log (see `Engine::forget_undurable`).
    full: watch::Sender<bool>,
    in_flight: Arc<Semaphore>,
    replies: mpsc::UnboundedSender<Pending>,
    /// Appends decided in this batch, written together when it ends (or before anything waits
    /// for the disk).
    unwritten: Vec<(Append, oneshot::Sender<AppendOutcome>)>,
    /// Timers armed by what has been decided.
    timers: Timers,
    /// The timer index as of a decided position, to keep beside the log once that is durable.
    unsaved: Option<(u64, Vec<u8>)>,
    /// When the timer index was last kept.
    saved_at: tokio::time::Instant,
    /// After the disk was found full: the engine's own work (timers, schedules, orders moving
    /// on) waits until then, rather than being decided and refused over and over; commands still
    /// come in and try the disk.
    held_back: Option<tokio::time::Instant>,
    /// Whether the engine runs, as decided.
    engine: EngineState,
    /// What the service info shows of it.
    status: watch::Sender<EngineStatus>,
    /// The catalog's schedules as decided.
    schedules: watch::Sender<BTreeMap<String, ScheduleState>>,
    /// Schedules whose firing could not take effect, until the next start.
    schedules_aside: std::collections::BTreeSet<String>,
    /// Internal commands decisions called for (orders moving on), decided next.
    reactions: VecDeque<Command>,
    /// Set when the open orders are to be moved on again (the engine resumed).
    reconcile: bool,
}

/// Whether the engine runs, and what is still moving: what the service info shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStatus {
    /// Paused (with `moving` > 0: still pausing).
    pub paused: bool,
    /// Why it was paused.
    pub reason: String,
    /// Who paused it.
    pub paused_by: String,
    /// Processes with a task attempt out with a worker.
    pub moving: usize,
    /// Timers armed.
    pub timers: usize,
}

impl EngineStatus {
    /// `running`, `pausing` (paused, attempts still out) or `paused`.
    pub fn state(&self) -> &'static str {
        match (self.paused, self.moving) {
            (false, _) => "running",
            (true, 0) => "paused",
            (true, _) => "pausing",
        }
    }
}

fn unavailable(why: &str) -> v1::CommandReply {
    Rejection::new(Code::Unavailable, why.to_owned()).to_reply()
}

fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

impl Engine {
    /// Starts the engine over `log` (which it writes alone) and returns its handle and task. The
    /// task ends when every handle is dropped, or with an error if the log fails.
    pub fn spawn(
        log: SharedLog,
        catalog: Arc<Catalog>,
        options: EngineOptions,
    ) -> Result<(EngineHandle, JoinHandle<Result<(), Error>>), Error> {
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let (replies, pending) = mpsc::unbounded_channel();
        let (failed, _) = watch::channel(false);
        let (full, _) = watch::channel(false);
        let (status, status_rx) = watch::channel(EngineStatus::default());
        let (schedules, schedules_rx) = watch::channel(BTreeMap::new());
        let replier = tokio::spawn(replier(
            pending,
            failed.clone(),
            full.clone(),
            options.tap.clone(),
            options.schedule_runs.clone(),
        ));
        let engine = Engine {
            in_flight: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
            next_position: log.head() + 1,
            log,
            catalog,
            subscriptions: Cache::new(options.cache_capacity),
            processes: Cache::new(options.cache_capacity),
            orders: Cache::new(options.cache_capacity),
            // Command ids must outlive their appends in flight (see `settle`): keep four times
            // as many as may be in flight.
            recent: Cache::new(options.max_in_flight.max(1) * 4),
            options,
            failed,
            full,
            replies,
            unwritten: Vec::new(),
            timers: Timers::default(),
            unsaved: None,
            saved_at: tokio::time::Instant::now(),
            held_back: None,
            engine: EngineState::default(),
            status,
            schedules,
            schedules_aside: Default::default(),
            reactions: VecDeque::new(),
            reconcile: true,
        };
        let task = tokio::spawn(async move {
            let result = engine.run(rx).await;
            // Every queued reply is sent before the task reports.
            let _ = replier.await;
            result
        });
        Ok((
            EngineHandle {
                tx,
                status: status_rx,
                schedules: schedules_rx,
            },
            task,
        ))
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Request>) -> Result<(), Error> {
        self.timers = Timers::recover(self.log.as_ref())?;
        self.engine = self.fold(ENGINE_STREAM, EngineState::evolve).await?;
        self.start_schedules().await?;
        self.report_status();
        let mut batch = Vec::with_capacity(self.options.max_batch);
        let mut full = self.full.subscribe();
        loop {
            let wake = self.wake_at();
            tokio::select! {
                n = rx.recv_many(&mut batch, self.options.max_batch) => if n == 0 { break },
                () = tokio::time::sleep_until(wake) => {}
                // The disk filled up: forget what was decided since, at once.
                Ok(()) = full.changed() => {}
            }
            for request in batch.drain(..) {
                self.handle(request).await;
            }
            if !self.holding_back() {
                self.react().await;
                self.fire_due().await;
            }
            self.write_decided();
            if *self.full.borrow() {
                self.forget_undurable().await?;
            }
            self.keep_timers();
            self.report_status();
            if *self.failed.borrow() {
                rx.close();
                while let Some(r) = rx.recv().await {
                    let _ = r
                        .reply
                        .send(unavailable("the event log failed; the service is stopping"));
                }
                return Err(Error::Corrupt("the event log failed".into()));
            }
        }
        // Stopping: keep the index as of everything decided, once that is durable.
        if !*self.failed.borrow() && (self.timers.dirty || self.unsaved.is_some()) {
            self.settle_log().await?;
            let bytes = self.timers.encode(self.next_position - 1);
            Timers::keep(self.log.as_ref(), &bytes)?;
        }
        Ok(())
    }

    /// After an append found the disk full: waits until every append in flight is settled (the
    /// log refuses them all: they were decided on the one it did not take), forgets everything
    /// decided since the log's durable head (state, replies, timers, schedules), and has the
    /// log take appends again. The next command tries the disk again.
    async fn forget_undurable(&mut self) -> Result<(), Error> {
        let decided = self.next_position - 1;
        let all = u32::try_from(self.options.max_in_flight.max(1)).unwrap_or(u32::MAX);
        let settled = self
            .in_flight
            .clone()
            .acquire_many_owned(all)
            .await
            .map_err(|_| Error::Closed)?;
        // And every reply queued before now is out, while the replier still knows the disk was
        // full (a reply decided on forgotten state must not go out as it was).
        let (barrier, passed) = oneshot::channel();
        self.queue(Pending::Barrier(barrier));
        let _ = passed.await;
        // Reads wait for nothing any more (the head is where the engine goes on from).
        self.full.send_replace(false);
        self.subscriptions.clear();
        self.processes.clear();
        self.orders.clear();
        self.recent.clear();
        self.next_position = self.log.head() + 1;
        self.timers = Timers::load_quietly(self.log.as_ref())?;
        self.timers.dirty = true;
        self.unsaved = None;
        self.engine = self.fold(ENGINE_STREAM, EngineState::evolve).await?;
        self.load_schedules()?;
        self.reactions.clear();
        // Open orders move on again from what the log holds, once the disk had a moment.
        self.reconcile = true;
        self.held_back =
            Some(tokio::time::Instant::now() + Duration::from_millis(u64::from(FULL_RETRY_MS)));
        self.log.resume_writes();
        drop(settled);
        // The log says it once per spell of a full disk; each refused command passes here.
        tracing::debug!(
            head = self.next_position - 1,
            forgotten = decided.saturating_sub(self.next_position - 1),
            "the disk was full: what was decided after the log's head is forgotten; the next command tries again"
        );
        Ok(())
    }

    /// Where the schedule `name` stands, as the log says.
    fn schedule_state(&self, name: &str) -> Result<ScheduleState, Error> {
        let stream = schedule_stream(name);
        let version = self.log.stream_version(&stream)?;
        let mut state = ScheduleState::default();
        // Every schedule event carries the whole state: the last one is enough.
        for e in self.log.read_stream(&stream, version)? {
            let e = orca_proto::decode_stored_event(&e.payload, e.position, &e.stream, e.version)
                .map_err(|err| Error::Corrupt(format!("event {}: {err}", e.position)))?;
            state.evolve(&e);
        }
        Ok(state)
    }

    /// Where each schedule of the catalog stands, as the log says.
    fn load_schedules(&mut self) -> Result<(), Error> {
        let mut states = BTreeMap::new();
        for s in self.catalog.schedules() {
            states.insert(s.name.clone(), self.schedule_state(&s.name)?);
        }
        self.schedules.send_replace(states);
        Ok(())
    }

    /// Whether the engine's own work waits for a full disk (see `held_back`).
    fn holding_back(&self) -> bool {
        self.held_back
            .is_some_and(|t| t > tokio::time::Instant::now())
    }

    /// When to look at the timers again: when the first is due, at most a nap away (the clock
    /// may jump), and no later than when the index is to be kept; not before a full disk's
    /// hold-back ends.
    fn wake_at(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        if let Some(until) = self.held_back.filter(|t| *t > now) {
            return until;
        }
        let nap = self.options.timer_nap;
        if !self.reactions.is_empty() || (self.reconcile && !self.engine.paused) {
            return now;
        }
        let mut wake = now + Duration::from_secs(3600);
        let schedules = self.schedules.borrow();
        let first_schedule = schedules
            .iter()
            .filter(|(name, s)| {
                !self.engine.paused && s.running.is_none() && !self.schedules_aside.contains(*name)
            })
            .filter_map(|(_, s)| s.next_due)
            .min_by_key(|t| (t.seconds, t.nanos));
        let first_timer = self
            .timers
            .first(self.engine.paused)
            .map(crate::timers::Armed::due);
        let first = match (first_timer, first_schedule) {
            (Some(a), Some(b)) => Some(if (a.seconds, a.nanos) <= (b.seconds, b.nanos) {
                a
            } else {
                b
            }),
            (a, b) => a.or(b),
        };
        if let Some(first) = first {
            let clock = self.options.clock.now();
            let until = timestamp_diff(first, clock);
            wake = wake.min(now + until.min(nap));
        }
        if self.unsaved.is_some() {
            wake = wake.min(now + nap);
        } else if self.timers.dirty {
            wake = wake.min(self.saved_at + KEEP_TIMERS_EVERY);
        }
        wake
    }

    /// Loads every schedule of the catalog from its last event, arms those that have no due time
    /// yet, and hands on again the runs a stop interrupted.
    async fn start_schedules(&mut self) -> Result<(), Error> {
        let names: Vec<String> = self.catalog.schedules().map(|s| s.name.clone()).collect();
        let mut states = BTreeMap::new();
        for name in &names {
            let state = self.schedule_state(name)?;
            if let Some(due) = state.running {
                self.hand_on(name, due, self.log.head());
            }
            states.insert(name.clone(), state);
        }
        self.schedules.send_replace(states);
        for name in names {
            let command = Checked {
                command: Command::ArmSchedule(ArmSchedule { name }),
                meta: internal_meta(),
            };
            let outcome = self.decide(&command).await;
            let (reply, _) = oneshot::channel();
            self.settle(outcome, &command, reply).await;
        }
        self.write_decided();
        Ok(())
    }

    /// Hands a schedule's run to whoever starts its processes.
    fn hand_on(&self, name: &str, due: Timestamp, position: u64) {
        if let Some(runs) = &self.options.schedule_runs {
            let _ = runs.send(ScheduleRun {
                name: name.to_owned(),
                due,
                position,
            });
        }
    }

    /// What the service info shows, if it changed.
    fn report_status(&self) {
        let status = EngineStatus {
            paused: self.engine.paused,
            reason: self.engine.reason.clone(),
            paused_by: self.engine.paused_by.clone(),
            moving: self.timers.moving(),
            timers: self.timers.len(),
        };
        self.status.send_if_modified(|s| {
            let changed = *s != status;
            *s = status;
            changed
        });
    }

    /// Fires every timer and schedule that is due, as internal commands decided like any other.
    /// While the engine is paused only attempt deadlines fire (timing an attempt out starts
    /// nothing); retries, held-back steps and schedules fire once it resumes. A schedule whose
    /// run is still starting its processes waits for it. A firing that cannot take effect is set
    /// aside (with the reason logged) rather than tried again at once; the next start tries it
    /// once more.
    async fn fire_due(&mut self) {
        let now = self.options.clock.now();
        let paused = self.engine.paused;
        let due: Vec<(String, Timestamp)> = self
            .schedules
            .borrow()
            .iter()
            .filter(|(name, s)| s.running.is_none() && !self.schedules_aside.contains(*name))
            .filter_map(|(name, s)| Some((name.clone(), s.next_due?)))
            .filter(|(_, due)| !paused && orca_domain::timer::is_due(*due, now))
            .collect();
        for (name, due) in due {
            let command = Checked {
                command: Command::FireSchedule(FireSchedule {
                    name: name.clone(),
                    due,
                }),
                meta: internal_meta(),
            };
            let outcome = self.decide(&command).await;
            if let Ok(Outcome::Rejected(r)) = &outcome
                && r.code == Code::TimerNotDue
            {
                continue;
            }
            let (reply, _) = oneshot::channel();
            self.settle(outcome, &command, reply).await;
            let moved = self
                .schedules
                .borrow()
                .get(&name)
                .is_none_or(|s| s.next_due != Some(due));
            if !moved {
                tracing::error!(schedule = %name, "schedule firing did not take effect; set aside until the next start");
                self.schedules_aside.insert(name);
            }
        }
        // At most a batch at a time: commands go on being decided while many timers come due
        // together (a resume after a long pause); the rest fire at the next turn, at once.
        for armed in self
            .timers
            .due_at(now, self.options.max_batch.max(1), paused)
        {
            let command = Checked {
                command: Command::FireTimer(FireTimer {
                    process_id: armed.process,
                    timer_id: armed.timer_id.clone(),
                    due: armed.due(),
                }),
                meta: internal_meta(),
            };
            let outcome = self.decide(&command).await;
            match &outcome {
                Ok(Outcome::Rejected(r)) if r.code == Code::TimerNotDue => continue,
                // The process no longer arms it (or is gone): nothing to fire, ever.
                Ok(Outcome::Rejected(r)) if r.code == Code::TimerNotArmed => {
                    self.timers.disarm(armed.process, &armed.timer_id);
                }
                _ => {}
            }
            let (reply, _) = oneshot::channel();
            self.settle(outcome, &command, reply).await;
            if self.timers.holds(&armed) {
                tracing::error!(process = %armed.process, timer = %armed.timer_id, "timer firing did not take effect; set aside until the next start");
                self.timers.set_aside(armed);
            }
        }
    }

    /// Decides the internal commands decisions called for (at most a batch at a time, so that
    /// commands from outside go on being decided), and after a start or a resume, what every
    /// open order waits on. One that cannot take effect now (the engine paused) is dropped: the
    /// resume sends it again.
    async fn react(&mut self) {
        if self.reconcile && !self.engine.paused {
            self.reconcile = false;
            let open: Vec<OrderId> = self.timers.open_orders().collect();
            for id in open {
                match self.order(id).await {
                    Ok(order) => self.queue_reactions(order.pending()),
                    Err(e) => tracing::error!(order = %id, error = %e, "cannot load an open order"),
                }
            }
        }
        for _ in 0..self.options.max_batch.max(1) {
            let Some(command) = self.reactions.pop_front() else {
                break;
            };
            let command = Checked {
                command,
                meta: internal_meta(),
            };
            let outcome = self.decide(&command).await;
            if let Ok(Outcome::Rejected(r)) = &outcome
                && r.code != Code::EnginePaused
            {
                tracing::warn!(command = ?command.command, code = %r.code.as_str(), message = %r.message, "internal command refused");
            }
            let (reply, _) = oneshot::channel();
            self.settle(outcome, &command, reply).await;
        }
    }

    /// Queues internal commands, each once.
    fn queue_reactions(&mut self, commands: Vec<Command>) {
        for c in commands {
            if !self.reactions.contains(&c) {
                self.reactions.push_back(c);
            }
        }
    }

    /// Keeps the timer index beside the log, at most every [`KEEP_TIMERS_EVERY`]: encoded as of
    /// a decided position, kept once that position is durable.
    fn keep_timers(&mut self) {
        if let Some((at, _)) = &self.unsaved
            && self.log.head() >= *at
            && let Some((_, bytes)) = self.unsaved.take()
            && let Err(e) = Timers::keep(self.log.as_ref(), &bytes)
        {
            tracing::warn!(error = %e, "cannot keep the timer index; a restart reads more of the log");
            self.timers.dirty = true;
        }
        if self.timers.dirty
            && self.unsaved.is_none()
            && self.saved_at.elapsed() >= KEEP_TIMERS_EVERY
        {
            self.unsaved = Some((
                self.next_position - 1,
                self.timers.encode(self.next_position - 1),
            ));
            self.saved_at = tokio::time::Instant::now();
        }
    }

    /// Writes the appends decided so far as one batch; the sync thread makes them durable. The
    /// write lands in the page cache, short enough for an async worker; the fsync, which is not,
    /// stays on the sync thread.
    fn write_decided(&mut self) {
        if !self.unwritten.is_empty() {
            self.log.append(std::mem::take(&mut self.unwritten));
        }
    }

    fn queue(&self, p: Pending) {
        // The replier lives as long as the engine.
        let _ = self.replies.send(p);
    }

    async fn handle(&mut self, request: Request) {
        let outcome = self.decide(&request.command).await;
        self.settle(outcome, &request.command, request.reply).await;
    }

    /// The stored reply of an applied command id, if any.
    fn replay_reply(&mut self, cmd: &Checked<Command>) -> Result<Option<v1::CommandReply>, Error> {
        let Some(id) = cmd.dedup_key() else {
            return Ok(None);
        };
        if let Some(r) = self.recent.get(&id) {
            return Ok(Some(r.clone()));
        }
        match self.log.command_reply(&id)? {
            Some((_, bytes)) => v1::CommandReply::decode(bytes.as_slice())
                .map(Some)
                .map_err(|e| Error::Corrupt(format!("reply of command {id}: {e}"))),
            None => Ok(None),
        }
    }

    async fn settle(
        &mut self,
        outcome: Result<Outcome, Error>,
        cmd: &Checked<Command>,
        to: oneshot::Sender<v1::CommandReply>,
    ) {
        if *self.failed.borrow() {
            return self.queue(Pending::Ready(unavailable("the event log failed"), to));
        }
        let decision = match outcome {
            Ok(Outcome::Decided(d)) => *d,
            Ok(Outcome::Rejected(rejection)) => {
                return self.queue(Pending::Ready(rejection.to_reply(), to));
            }
            // Ordered behind the original, so it is durable by the time this is sent.
            Ok(Outcome::Replayed(reply)) => return self.queue(Pending::Ready(reply, to)),
            Err(Error::Log(e)) if e.is_storage_full() => {
                let why = format!("{e}; nothing was recorded: try again once there is room");
                return self.queue(Pending::Ready(
                    Rejection::busy(why, FULL_RETRY_MS).to_reply(),
                    to,
                ));
            }
            Err(e) => {
                tracing::error!(error = %e, "command failed");
                return self.queue(Pending::Ready(unavailable(&e.to_string()), to));
            }
        };
        let payloads: Vec<Vec<u8>> = decision
            .events
            .iter()
            .map(orca_proto::encode_stored_event)
            .collect();
        if let Some(big) = payloads.iter().map(Vec::len).find(|n| *n > MAX_EVENT_BYTES) {
            // Every event must fit a NATS message when it is published.
            let rejection = Rejection::new(
                Code::PayloadTooLarge,
                format!(
                    "the command would record an event of {big} bytes; the limit is {MAX_EVENT_BYTES}"
                ),
            );
            return self.queue(Pending::Ready(rejection.to_reply(), to));
        }
        let count = decision.events.len() as u64;
        if count == 0 {
            let reply = decision.accepted(self.next_position - 1);
            return self.queue(Pending::Ready(reply, to));
        }
        let key = cmd.dedup_key();
        let last = self.next_position + count - 1;
        self.next_position += count;
        let reply = decision.accepted(last);
        let append = Append {
            expected: decision
                .expected
                .iter()
                .map(|(s, v)| (s.clone(), Expected::Exact(*v)))
                .collect(),
            events: decision
                .events
                .iter()
                .zip(payloads)
                .map(|(e, payload)| NewEvent {
                    stream: e.stream.clone(),
                    payload,
                })
                .collect(),
            command_id: key.clone(),
            reply: reply.encode_to_vec(),
        };
        // Backpressure: at most `max_in_flight` appends between decision and disk. Those held
        // back in this batch must be on their way before waiting for one of them to finish.
        let permit = match self.in_flight.clone().try_acquire_owned() {
            Ok(p) => Ok(p),
            Err(_) => {
                self.write_decided();
                self.in_flight.clone().acquire_owned().await
            }
        };
        let Ok(permit) = permit else {
            return self.queue(Pending::Ready(unavailable("the engine is stopping"), to));
        };
        let (done, durable) = oneshot::channel();
        self.unwritten.push((append, done));
        for e in &decision.events {
            self.timers.apply(e);
        }
        let reactions = orca_domain::order::reactions(&decision);
        if !reactions.is_empty() {
            self.queue_reactions(reactions);
        }
        let Decision {
            process,
            subscription,
            engine,
            schedule,
            order,
            mut events,
            ..
        } = decision;
        if let Some(e) = engine {
            // Resumed: what open orders held back goes on.
            self.reconcile |= self.engine.paused && !e.paused;
            self.engine = e;
        }
        if let Some(o) = order {
            if o.status.is_final() {
                self.orders.remove(&o.id);
            } else {
                self.orders.insert(o.id, o);
            }
        }
        let mut runs = Vec::new();
        if let Some((name, state)) = schedule {
            let first = last + 1 - count;
            for (e, position) in events.iter().zip(first..) {
                if let Some(v1::event::Body::ScheduleFired(f)) = &e.body
                    && let Some(due) = f.due
                {
                    runs.push(ScheduleRun {
                        name: name.clone(),
                        due,
                        position,
                    });
                }
            }
            self.schedules.send_modify(|s| {
                s.insert(name, state);
            });
        }
        if self.options.tap.is_some() {
            for (e, position) in events.iter_mut().zip(last + 1 - count..) {
                e.position = position;
            }
        } else {
            events = Vec::new();
        }
        if let Some(p) = process {
            if p.status.is_finished() {
                self.processes.remove(&p.id);
            } else {
                self.processes.insert(p.id, p);
            }
        }
        if let Some(s) = subscription.filter(SubscriptionState::exists) {
            self.subscriptions.insert(s.id, s);
        }
        if let Some(key) = key {
            self.recent.insert(key, reply.clone());
        }
        self.queue(Pending::Commit {
            durable,
            reply,
            last,
            to,
            events,
            runs,
            _permit: permit,
        });
    }

    async fn decide(&mut self, cmd: &Checked<Command>) -> Result<Outcome, Error> {
        if let Some(reply) = self.replay_reply(cmd)? {
            return Ok(Outcome::Replayed(reply));
        }
        let process = match cmd.command.process_id() {
            Some(id) => Some(self.process(id).await?),
            None => None,
        };
        let subscription = match cmd
            .command
            .subscription_id()
            .or_else(|| process.as_ref().and_then(|p| p.subscription_id))
        {
            Some(id) => Some(self.subscription(id).await?),
            None => None,
        };
        let order = match cmd.command.order_id() {
            Some(id) => Some(self.order(id).await?),
            None => None,
        };
        let state = Loaded {
            process,
            subscription,
            engine: self.engine.clone(),
            schedule: cmd
                .command
                .schedule_name()
                .and_then(|n| self.schedules.borrow().get(n).cloned()),
            order,
        };
        Ok(with_env(&cmd.meta, self.options.clock.now(), |env| {
            orca_domain::decide(&self.catalog, &state, &cmd.command, env)
        })
        .into())
    }

    /// Reads from the log only what is durable: wait for in-flight appends first.
    /// Fails when the log failed, or found the disk full: the head will then never get there.
    async fn settle_log(&self) -> Result<(), Error> {
        let target = self.next_position - 1;
        let mut head = self.log.subscribe();
        let mut failed = self.failed.subscribe();
        let mut full = self.full.subscribe();
        tokio::select! {
            r = head.wait_for(|h| *h >= target) => r.map(|_| ()).map_err(|_| Error::Closed),
            _ = failed.wait_for(|f| *f) => Err(Error::Corrupt("the event log failed".into())),
            _ = full.wait_for(|f| *f) => Err(Error::Log(orca_log::Error::StorageFull(
                "an append in flight found the disk full".into(),
            ))),
        }
    }

    /// A subscription's state (version 0 when it does not exist).
    async fn subscription(&mut self, id: SubscriptionId) -> Result<SubscriptionState, Error> {
        if let Some(s) = self.subscriptions.get(&id) {
            return Ok(s.clone());
        }
        self.write_decided();
        let sub: SubscriptionState = self.fold(&id.stream(), SubscriptionState::evolve).await?;
        if sub.exists() {
            self.subscriptions.insert(id, sub.clone());
        }
        Ok(sub)
    }

    /// A process's state (version 0 when it does not exist).
    async fn process(&mut self, id: ProcessId) -> Result<ProcessState, Error> {
        if let Some(p) = self.processes.get(&id) {
            return Ok(p.clone());
        }
        self.write_decided();
        let p: ProcessState = self.fold(&id.stream(), ProcessState::evolve).await?;
        if p.exists() && !p.status.is_finished() {
            self.processes.insert(id, p.clone());
        }
        Ok(p)
    }

    /// An order's state (version 0 when it does not exist).
    async fn order(&mut self, id: OrderId) -> Result<OrderState, Error> {
        if let Some(o) = self.orders.get(&id) {
            return Ok(o.clone());
        }
        self.write_decided();
        let o: OrderState = self.fold(&id.stream(), OrderState::evolve).await?;
        if o.exists() && !o.status.is_final() {
            self.orders.insert(id, o.clone());
        }
        Ok(o)
    }

    /// Rebuilds an aggregate from its durable stream.
    async fn fold<T: Default>(
        &self,
        stream: &str,
        evolve: fn(&mut T, &v1::Event),
    ) -> Result<T, Error> {
        self.settle_log().await?;
        let mut state = T::default();
        for e in &self.read_stream(stream)? {
            evolve(&mut state, e);
        }
        Ok(state)
    }

    fn read_stream(&self, stream: &str) -> Result<Vec<v1::Event>, Error> {
        self.log
            .read_stream(stream, 1)?
            .iter()
            .map(|r| {
                orca_proto::decode_stored_event(&r.payload, r.position, &r.stream, r.version)
                    .map_err(|e| Error::Corrupt(format!("event {}: {e}", r.position)))
            })
            .collect()
    }
}

/// Runs a decision with what the domain may not make up: the clock, the actor, the command id
/// (generated when the client gave none) and fresh event ids.
fn with_env<R>(meta: &Meta, now: Timestamp, decide: impl FnOnce(&mut Env<'_>) -> R) -> R {
    let command_id = meta
        .command_id
        .clone()
        .unwrap_or_else(|| Uuid::now_v7().to_string());
    // Time-ordered: process and subscription ids sort by creation.
    let mut new_id = Uuid::now_v7;
    let mut env = Env {
        now,
        actor: &meta.actor,
        command_id: &command_id,
        new_id: &mut new_id,
    };
    decide(&mut env)
}

/// What deciding a command came to.
enum Outcome {
    Decided(Box<Decision>),
    Rejected(Rejection),
    /// The command id was applied before: its stored reply.
    Replayed(v1::CommandReply),
}

impl From<Result<Decision, Rejection>> for Outcome {
    fn from(r: Result<Decision, Rejection>) -> Self {
        match r {
            Ok(d) => Outcome::Decided(Box::new(d)),
            Err(r) => Outcome::Rejected(r),
        }
    }
}

/// How long a command refused because the disk is full is told to wait.
const FULL_RETRY_MS: u32 = 1_000;

async fn replier(
    mut pending: mpsc::UnboundedReceiver<Pending>,
    failed: watch::Sender<bool>,
    full: watch::Sender<bool>,
    tap: Option<Tap>,
    schedule_runs: Option<mpsc::UnboundedSender<ScheduleRun>>,
) {
    while let Some(p) = pending.recv().await {
        match p {
            // Everything queued before this is settled; if an append failed, this reply may
            // rest on state that never became durable (e.g. the replay of a failed command).
            Pending::Ready(_, to) if *failed.borrow() => {
                let _ = to.send(unavailable("the event log failed; the service is stopping"));
            }
            // Decided on state that may never have become durable (the replay of a refused
            // command, a refusal because of one, a command that changed nothing on it): refused
            // like it, to be sent again.
            Pending::Ready(_, to) if *full.borrow() => {
                let _ = to.send(
                    Rejection::busy(
                        "event log storage full; nothing was recorded: try again once there is room",
                        FULL_RETRY_MS,
                    )
                    .to_reply(),
                );
            }
            Pending::Ready(reply, to) => {
                let _ = to.send(reply);
            }
            Pending::Barrier(done) => {
                let _ = done.send(());
            }
            Pending::Commit {
                durable,
                reply,
                last,
                to,
                events,
                runs,
                _permit,
            } => {
                let reply = match durable.await {
                    // Once anything failed, nothing after it is reported durable.
                    Ok(Ok(Ok(c))) if c.last_position == last && !*failed.borrow() => {
                        // Only now is it certain that the log holds these at these positions.
                        if let Some(Tap(tap)) = &tap {
                            tap(events);
                        }
                        // A firing not recorded (the disk full, the log failed) starts nothing.
                        if let Some(to) = &schedule_runs {
                            for run in runs {
                                let _ = to.send(run);
                            }
                        }
                        reply
                    }
                    // Nothing of it was written, nor of anything decided after it: the engine
                    // forgets those and goes on from the log.
                    Ok(Err(e)) if e.is_storage_full() && !*failed.borrow() => {
                        full.send_replace(true);
                        Rejection::busy(
                            format!("{e}; nothing was recorded: try again once there is room"),
                            FULL_RETRY_MS,
                        )
                        .to_reply()
                    }
                    other => {
                        tracing::error!(
                            ?other,
                            expected_last = last,
                            "append did not land as decided; stopping"
                        );
                        failed.send_replace(true);
                        unavailable("the event log failed; the service is stopping")
                    }
                };
                let _ = to.send(reply);
            }
        }
    }
}

/// `a - b` in nanoseconds (negative when `a` is earlier).
fn timestamp_diff(a: Timestamp, b: Timestamp) -> std::time::Duration {
    let nanos = (i128::from(a.seconds) - i128::from(b.seconds)) * 1_000_000_000
        + i128::from(a.nanos)
        - i128::from(b.nanos);
    Duration::from_nanos(u64::try_from(nanos.max(0)).unwrap_or(u64::MAX))
}

/// Who the engine's own commands (timers, schedules) are recorded as.
fn internal_meta() -> Meta {
    Meta {
        command_id: None,
        actor: "orca".into(),
    }
}
