use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use orca_domain::ids::split_stream;
use orca_proto::{Message, v1};
use tokio::sync::watch;

/// Failure of the view store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// sled failed.
    #[error("view storage: {0}")]
    Storage(#[from] sled::Error),
    /// The log failed while projecting.
    #[error(transparent)]
    Log(#[from] orca_log::Error),
    /// A stored view or event does not decode.
    #[error("view store corrupt: {0}")]
    Corrupt(String),
}

const SUBSCRIPTION: u8 = b'S';
const PROCESS: u8 = b'P';
const SUB_INDEX: u8 = b's';
const PROC_INDEX: u8 = b'p';
const CHECKPOINT: &[u8] = b"m:checkpoint";

/// Every key and value of the view store, in key order.
pub type Dump = Vec<(Vec<u8>, Vec<u8>)>;

/// Which subscriptions a list returns; empty fields match all.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionFilter {
    /// Lifecycle status.
    pub status: String,
    /// Product name.
    pub product: String,
    /// Customer id.
    pub customer_id: String,
}

/// Which processes a list returns; empty fields match all.
#[derive(Debug, Clone, Default)]
pub struct ProcessFilter {
    /// Process status.
    pub status: String,
    /// Workflow name.
    pub workflow: String,
    /// Target subscription.
    pub subscription_id: String,
}

/// One page of a list, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// Items.
    pub items: Vec<T>,
    /// Pass back to get the next page; empty when there is none.
    pub next_page_token: String,
}

/// The view store; cheap to clone.
#[derive(Clone)]
pub struct Views {
    db: sled::Db,
    tree: sled::Tree,
    checkpoint: watch::Sender<u64>,
}

fn key(kind: u8, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 1);
    k.push(kind);
    k.extend_from_slice(id.as_bytes());
    k
}

fn index_key(kind: u8, position: u64, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 9);
    k.push(kind);
    k.extend_from_slice(&position.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

enum Touched {
    Subscription(v1::Subscription),
    Process(v1::Process),
}

impl Views {
    /// Opens (or creates) the view store at `path`; `cache_bytes` bounds sled's page cache.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, Error> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .open()?;
        let tree = db.open_tree("views")?;
        let position = match tree.get(CHECKPOINT)? {
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| Error::Corrupt("checkpoint".into()))?,
            ),
            None => 0,
        };
        let (checkpoint, _) = watch::channel(position);
        Ok(Self {
            db,
            tree,
            checkpoint,
        })
    }

    /// Last log position the views include.
    pub fn checkpoint(&self) -> u64 {
        *self.checkpoint.borrow()
    }

    /// Waits until the views include `position`, at most `timeout`. True if they do.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        let mut rx = self.checkpoint.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|p| *p >= position))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Folds `events` (in log order, all after the checkpoint) into the views and moves the
    /// checkpoint, in one atomic batch.
    pub fn apply(&self, events: &[v1::Event]) -> Result<(), Error> {
        let Some(last) = events.last() else {
            return Ok(());
        };
        let mut touched: HashMap<Vec<u8>, Touched> = HashMap::new();
        let mut batch = sled::Batch::default();
        for event in events {
            let Some((aggregate, id)) = split_stream(&event.stream) else {
                continue;
            };
            match aggregate {
                "subscription" => {
                    let k = key(SUBSCRIPTION, id);
                    let mut sub = match touched.remove(&k) {
                        Some(Touched::Subscription(s)) => s,
                        _ => self.load(&k)?.unwrap_or_default(),
                    };
                    if matches!(event.body, Some(v1::event::Body::SubscriptionCreated(_))) {
                        batch.insert(index_key(SUB_INDEX, event.position, id), &[]);
                    }
                    orca_domain::subscription::evolve(&mut sub, event);
                    touched.insert(k, Touched::Subscription(sub));
                }
                "process" => {
                    let k = key(PROCESS, id);
                    let mut p = match touched.remove(&k) {
                        Some(Touched::Process(p)) => p,
                        _ => self.load(&k)?.unwrap_or_default(),
                    };
                    if matches!(event.body, Some(v1::event::Body::ProcessStarted(_))) {
                        batch.insert(index_key(PROC_INDEX, event.position, id), &[]);
                    }
                    orca_domain::process::evolve(&mut p, event);
                    touched.insert(k, Touched::Process(p));
                }
                _ => {}
            }
        }
        for (k, view) in touched {
            let bytes = match view {
                Touched::Subscription(s) => s.encode_to_vec(),
                Touched::Process(p) => p.encode_to_vec(),
            };
            batch.insert(k, bytes);
        }
        batch.insert(CHECKPOINT, &last.position.to_be_bytes());
        self.tree.apply_batch(batch)?;
        self.checkpoint.send_replace(last.position);
        Ok(())
    }

    fn load<T: Message + Default>(&self, k: &[u8]) -> Result<Option<T>, Error> {
        match self.tree.get(k)? {
            Some(v) => T::decode(v.as_ref())
                .map(Some)
                .map_err(|e| Error::Corrupt(format!("{}: {e}", String::from_utf8_lossy(k)))),
            None => Ok(None),
        }
    }

    /// One subscription.
    pub fn subscription(&self, id: &str) -> Result<Option<v1::Subscription>, Error> {
        self.load(&key(SUBSCRIPTION, id))
    }

    /// One process.
    pub fn process(&self, id: &str) -> Result<Option<v1::Process>, Error> {
        self.load(&key(PROCESS, id))
    }

    fn page<T: Message + Default>(
        &self,
        index: u8,
        kind: u8,
        limit: usize,
        page_token: &str,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Page<T>, Error> {
        let limit = limit.clamp(1, 1000);
        let upper = match page_token.parse::<u64>() {
            Ok(p) if !page_token.is_empty() => index_key(index, p, ""),
            _ => vec![index + 1],
        };
        let mut items = Vec::new();
        let mut next = String::new();
        for entry in self.tree.range(vec![index]..upper).rev() {
            let (k, _) = entry?;
            let position = k
                .get(1..9)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| Error::Corrupt("list index".into()))?;
            let id = String::from_utf8_lossy(&k[9..]).into_owned();
            if let Some(item) = self.load::<T>(&key(kind, &id))?.filter(&keep) {
                if items.len() == limit {
                    next = (position + 1).to_string();
                    break;
                }
                items.push(item);
            }
        }
        Ok(Page {
            items,
            next_page_token: next,
        })
    }

    /// Subscriptions, newest first.
    pub fn list_subscriptions(
        &self,
        f: &SubscriptionFilter,
        limit: usize,
        page_token: &str,
    ) -> Result<Page<v1::Subscription>, Error> {
        self.page(
            SUB_INDEX,
            SUBSCRIPTION,
            limit,
            page_token,
            |s: &v1::Subscription| {
                (f.status.is_empty() || s.status == f.status)
                    && (f.product.is_empty() || s.product == f.product)
                    && (f.customer_id.is_empty() || s.customer_id == f.customer_id)
            },
        )
    }

    /// Processes, newest first.
    pub fn list_processes(
        &self,
        f: &ProcessFilter,
        limit: usize,
        page_token: &str,
    ) -> Result<Page<v1::Process>, Error> {
        self.page(PROC_INDEX, PROCESS, limit, page_token, |p: &v1::Process| {
            (f.status.is_empty() || p.status == f.status)
                && (f.workflow.is_empty() || p.workflow == f.workflow)
                && (f.subscription_id.is_empty() || p.subscription_id == f.subscription_id)
        })
    }

    /// Every key and value, in key order: what "byte for byte equal" compares.
    pub fn dump(&self) -> Result<Dump, Error> {
        self.tree
            .iter()
            .map(|e| {
                e.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(Error::from)
            })
            .collect()
    }

    /// Writes the views to disk (sled flush); derived data needs no fsync.
    pub fn flush(&self) -> Result<(), Error> {
        self.db.flush()?;
        Ok(())
    }
}
