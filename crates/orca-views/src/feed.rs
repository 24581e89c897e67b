//! Decoded events handed over in memory by the engine, so the projector need not read and decode
//! what the same process just wrote.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orca_proto::v1;
use tokio::sync::watch;

/// Events held for the projector at most; beyond that the oldest go and are read from the log.
const CAPACITY: usize = 65_536;

/// Events with their log positions, in log order; cheap to clone (clones share it).
///
/// Only a hint: the projector takes from it what is contiguous with its checkpoint and durable,
/// and reads the log for anything else. The engine hands events over only once the log has
/// confirmed them at the positions it decided, so what the feed holds is what the log holds.
#[derive(Clone)]
pub struct Feed {
    events: Arc<Mutex<VecDeque<v1::Event>>>,
    /// (first position ever pushed, last position pushed); zeros before the first push.
    pushed: watch::Sender<(u64, u64)>,
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            events: Arc::default(),
            pushed: watch::channel((0, 0)).0,
        }
    }
}

impl Feed {
    /// An empty feed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits at most `timeout` for the feed to hold everything through `upto`, if it is ever
    /// going to hold `from`: the log says an event is durable a moment before the engine hands
    /// it over. Returns at once when `from` is before the feed's first event (it is read from
    /// the log) or after `upto`.
    pub async fn wait_for(&self, from: u64, upto: u64, timeout: Duration) {
        let mut rx = self.pushed.subscribe();
        let (first, _) = *rx.borrow();
        if first == 0 || from < first || from > upto {
            return;
        }
        let _ = tokio::time::timeout(timeout, rx.wait_for(|(_, last)| *last >= upto)).await;
    }

    /// Adds events that follow those already held (positions set, ascending).
    pub fn push(&self, events: Vec<v1::Event>) {
        let Ok(mut held) = self.events.lock() else {
            return;
        };
        if let (Some(last), Some(first)) = (held.back(), events.first())
            && first.position != last.position + 1
        {
            // Not contiguous (a restart of the writer): start over.
            held.clear();
        }
        let (first, last) = match (events.first(), events.last()) {
            (Some(f), Some(l)) => (f.position, l.position),
            _ => return,
        };
        held.extend(events);
        let excess = held.len().saturating_sub(CAPACITY);
        held.drain(..excess);
        drop(held);
        self.pushed.send_modify(|(f, l)| {
            if *f == 0 {
                *f = first;
            }
            *l = last;
        });
    }

    /// Up to `max` events from position `from` through `durable`, if the feed holds `from`;
    /// events before `from` are dropped. Empty when the log must be read instead.
    pub fn take(&self, from: u64, durable: u64, max: usize) -> Vec<v1::Event> {
        let Ok(mut held) = self.events.lock() else {
            return Vec::new();
        };
        while held.front().is_some_and(|e| e.position < from) {
            held.pop_front();
        }
        if held.front().is_none_or(|e| e.position != from) {
            return Vec::new();
        }
        let n = held
            .iter()
            .take(max)
            .take_while(|e| e.position <= durable)
            .count();
        held.drain(..n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(positions: std::ops::RangeInclusive<u64>) -> Vec<v1::Event> {
        positions
            .map(|position| v1::Event {
                position,
                ..Default::default()
            })
            .collect()
    }

    fn positions(events: &[v1::Event]) -> Vec<u64> {
        events.iter().map(|e| e.position).collect()
    }

    #[test]
    fn hands_over_only_what_is_durable_and_follows_the_checkpoint() {
        let feed = Feed::new();
        feed.push(events(1..=3));
        feed.push(events(4..=6));
        assert_eq!(positions(&feed.take(1, 4, 100)), [1, 2, 3, 4]);
        assert_eq!(positions(&feed.take(5, 6, 1)), [5]);
        // A gap before what it holds: the log must be read.
        assert!(feed.take(4, 6, 100).is_empty());
        assert_eq!(positions(&feed.take(6, 6, 100)), [6]);
        assert!(feed.take(7, 9, 100).is_empty());
    }

    #[test]
    fn skips_what_the_projector_already_has_and_restarts_on_a_gap() {
        let feed = Feed::new();
        feed.push(events(1..=5));
        assert_eq!(positions(&feed.take(3, 5, 100)), [3, 4, 5]);
        feed.push(events(9..=10));
        assert!(feed.take(6, 10, 100).is_empty());
        assert_eq!(positions(&feed.take(9, 10, 100)), [9, 10]);
    }

    #[tokio::test]
    async fn waiting_returns_once_the_position_arrives_and_never_for_older_ones() {
        let feed = Feed::new();
        // Nothing pushed yet: nothing to wait for.
        tokio::time::timeout(
            Duration::from_millis(100),
            feed.wait_for(1, 1, Duration::from_secs(60)),
        )
        .await
        .unwrap();
        feed.push(events(5..=6));
        let waiter = {
            let feed = feed.clone();
            tokio::spawn(async move { feed.wait_for(6, 7, Duration::from_secs(60)).await })
        };
        feed.push(events(7..=7));
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        // Before the first event pushed: read from the log, no waiting.
        tokio::time::timeout(
            Duration::from_millis(100),
            feed.wait_for(3, 7, Duration::from_secs(60)),
        )
        .await
        .unwrap();
    }

    #[test]
    fn holds_at_most_its_capacity() {
        let feed = Feed::new();
        let n = CAPACITY as u64 + 10;
        feed.push(events(1..=n));
        assert!(feed.take(1, n, 10).is_empty(), "the oldest were dropped");
        assert_eq!(positions(&feed.take(11, n, 1)), [11]);
    }
}
