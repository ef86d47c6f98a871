//! What each channel is told it can sell, and telling it.
//!
//! Every write hands the writer the levels it left (each channel's ATP,
//! published figure and open units of the SKUs it touched). The publisher
//! is the writer's [`Sequencer`]: for each commit it keeps those that
//! differ from what the channel was last told, numbers them per channel
//! (`seq`, without gaps), has them written in that same commit (so
//! sequence numbers and resumption survive restarts) and, once it has
//! committed, hands them to watchers, before the writes are acknowledged.
//! What moves levels without a write of its own (an admin change, a reload
//! after a failed commit, the first pass at start) is announced to the
//! publisher's task, which queues the current levels the same way; only the
//! writer numbers. Each watcher has a pending map with the newest event per
//! SKU: a watcher that stops reading never blocks anyone, and when it
//! reads again it gets the latest level of each SKU, in sequence order,
//! never a stale one last. The publisher never changes stock.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::domain::{ChannelCode, Sku};
use crate::engine::{Changed, Engine, Level};
use crate::store::{ChannelEvent, Sequencer, SkuLevels};

pub use crate::store::Published;

pub mod redis;

/// Why a watch cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("\"{0}\" is not a declared channel")]
    UnknownChannel(ChannelCode),
    #[error("after_seq {after} is ahead of channel {channel}'s last seq {last}; resume with at most {last}, or 0 for a full snapshot")]
    AheadOfLog {
        channel: ChannelCode,
        after: u64,
        last: u64,
    },
}

/// The publisher. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    log: Arc<Log>,
    stop: watch::Receiver<bool>,
}

/// What every channel was told, and who listens: the writer's sequencer.
/// Holds no engine, so the writer holding it keeps no engine alive.
#[derive(Default)]
struct Log {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    channels: HashMap<ChannelCode, ChannelLog>,
    /// Feeds of every pass: the Redis mirror.
    feeds: Vec<mpsc::UnboundedSender<Arc<Published>>>,
}

/// One channel's published levels.
#[derive(Default)]
struct ChannelLog {
    /// Highest seq stored.
    seq: u64,
    /// What the channel was last told, per SKU.
    last: HashMap<Sku, ChannelEvent>,
    watchers: Vec<Weak<Slot>>,
}

/// One watcher's mailbox: the newest undelivered event per SKU.
#[derive(Default)]
struct Slot {
    pending: Mutex<HashMap<Sku, ChannelEvent>>,
    notify: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Publisher {
    /// Starts publishing the engine's committed changes until `stop` turns
    /// true. The first pass looks at every SKU, so levels that moved while
    /// the service was down (or a rule in the config) go out at start.
    pub fn start(engine: Engine, stop: watch::Receiver<bool>) -> (Publisher, JoinHandle<()>) {
        let (changes, stored) = engine.subscribe();
        let mut state = State::default();
        for e in stored {
            let log = state.channels.entry(e.channel.clone()).or_default();
            log.seq = log.seq.max(e.seq);
            log.last.insert(e.sku.clone(), e);
        }
        let log = Arc::new(Log {
            state: Mutex::new(state),
        });
        engine.sequence_with(log.clone());
        let inner = Arc::new(Inner { engine, log, stop });
        let task = tokio::spawn(run(inner.clone(), changes));
        (Publisher { inner }, task)
    }

    /// A feed of every pass once its events are stored, in order.
    pub fn feed(&self) -> mpsc::UnboundedReceiver<Arc<Published>> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.inner.log.state).feeds.push(tx);
        rx
    }

    /// What every channel was last told, per SKU (the Redis resync).
    pub fn current(&self) -> Vec<ChannelEvent> {
        lock(&self.inner.log.state)
            .channels
            .values()
            .flat_map(|l| l.last.values().cloned())
            .collect()
    }

    /// Starts a watch of `channel`: with `after_seq` 0 the current level of
    /// every SKU first, else the newest level of every SKU that changed after
    /// that seq; then live changes.
    pub fn watch(&self, channel: &ChannelCode, after_seq: u64) -> Result<Watch, WatchError> {
        if self.inner.engine.catalog().channel_index(channel).is_none() {
            return Err(WatchError::UnknownChannel(channel.clone()));
        }
        let slot = Arc::new(Slot::default());
        {
            let mut state = lock(&self.inner.log.state);
            let log = state.channels.entry(channel.clone()).or_default();
            if after_seq > log.seq {
                return Err(WatchError::AheadOfLog {
                    channel: channel.clone(),
                    after: after_seq,
                    last: log.seq,
                });
            }
            let mut pending = lock(&slot.pending);
            for e in log.last.values().filter(|e| e.seq > after_seq) {
                pending.insert(e.sku.clone(), e.clone());
            }
            log.watchers.push(Arc::downgrade(&slot));
        }
        slot.notify.notify_one();
        crate::telemetry::watchers(channel, 1);
        Ok(Watch {
            slot,
            channel: channel.clone(),
            last_sent: after_seq,
            stop: self.inner.stop.clone(),
        })
    }
}

/// One watcher's end: yields batches of events in seq order.
pub struct Watch {
    slot: Arc<Slot>,
    channel: ChannelCode,
    last_sent: u64,
    stop: watch::Receiver<bool>,
}

impl Watch {
    /// The next events, oldest first, each SKU at most once and at its
    /// newest level; None once the service stops.
    pub async fn next(&mut self) -> Option<Vec<ChannelEvent>> {
        loop {
            let mut batch: Vec<ChannelEvent> =
                lock(&self.slot.pending).drain().map(|(_, e)| e).collect();
            batch.retain(|e| e.seq > self.last_sent);
            if !batch.is_empty() {
                batch.sort_by_key(|e| e.seq);
                self.last_sent = batch.last().map_or(self.last_sent, |e| e.seq);
                return Some(batch);
            }
            if *self.stop.borrow() {
                return None;
            }
            tokio::select! {
                _ = self.slot.notify.notified() => {}
                _ = self.stop.changed() => {}
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        crate::telemetry::watchers(&self.channel, -1);
    }
}

/// What is waiting to be recomputed.
#[derive(Default)]
struct Pending {
    all: bool,
    skus: HashSet<Sku>,
}

impl Pending {
    fn add(&mut self, c: Changed) {
        match c {
            Changed::All => self.all = true,
            Changed::Skus(skus) if !self.all => self.skus.extend(skus),
            Changed::Skus(_) => {}
        }
    }

    fn is_empty(&self) -> bool {
        !self.all && self.skus.is_empty()
    }
}

async fn run(inner: Arc<Inner>, mut changes: mpsc::UnboundedReceiver<Changed>) {
    let mut stop = inner.stop.clone();
    let mut pending = Pending {
        all: true,
        skus: HashSet::new(),
    };
    let mut backoff = Duration::from_millis(50);
    loop {
        while let Ok(c) = changes.try_recv() {
            pending.add(c);
        }
        if pending.is_empty() {
            tokio::select! {
                c = changes.recv() => match c {
                    Some(c) => pending.add(c),
                    None => return,
                },
                _ = stop.changed() => return,
            }
            continue;
        }
        let work = std::mem::take(&mut pending);
        let skus: Vec<Sku> = if work.all {
            inner.engine.skus()
        } else {
            work.skus.iter().cloned().collect()
        };
        let mut stored = Ok(());
        for ticket in inner.engine.publish_levels(&skus) {
            if let Err(e) = ticket.wait().await {
                stored = Err(e);
            }
        }
        match stored {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(e) => {
                tracing::warn!(error = %e, "could not store channel events; retrying");
                pending.add(if work.all {
                    Changed::All
                } else {
                    Changed::Skus(skus)
                });
                if !inner.engine.is_current() {
                    // Isolated (its lease lapsed): tried again as soon as
                    // the lease is renewed; deposed: the term is stopping.
                    tokio::select! {
                        current = inner.engine.until_current() => if !current { return },
                        _ = stop.changed() => return,
                    }
                    backoff = Duration::from_millis(50);
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

impl Sequencer for Log {
    /// Every (channel, SKU) whose newest published figure or open units
    /// differ from what the channel was last told (or was never told), with
    /// the next seqs of each channel.
    fn sequence(&self, levels: &[&SkuLevels]) -> Published {
        let mut newest: HashMap<&Sku, &SkuLevels> = HashMap::new();
        let mut skus: Vec<Sku> = Vec::new();
        for l in levels {
            if newest.insert(&l.sku, l).is_none() {
                skus.push(l.sku.clone());
            }
        }
        let state = lock(&self.state);
        let mut next_seq: HashMap<&ChannelCode, u64> = HashMap::new();
        let mut events = Vec::new();
        for sku in &skus {
            let l = newest[sku];
            for Level {
                channel,
                atp,
                published,
                open,
            } in &l.levels
            {
                let log = state.channels.get(channel);
                if log
                    .and_then(|c| c.last.get(sku))
                    .is_some_and(|e| e.published == *published && e.open == *open)
                {
                    continue;
                }
                let seq = next_seq
                    .entry(channel)
                    .or_insert_with(|| log.map_or(0, |c| c.seq));
                *seq += 1;
                events.push(ChannelEvent {
                    channel: channel.clone(),
                    seq: *seq,
                    sku: sku.clone(),
                    published: *published,
                    atp: *atp,
                    open: *open,
                    at_ms: l.at_ms,
                });
            }
        }
        Published { skus, events }
    }

    fn committed(&self, pass: Published) {
        deliver(self, pass);
    }

    fn in_doubt(&self, pass: &Published) {
        let mut state = lock(&self.state);
        for e in &pass.events {
            let log = state.channels.entry(e.channel.clone()).or_default();
            log.seq = log.seq.max(e.seq);
        }
    }
}

/// Records stored events as what each channel was told, and hands them to
/// its watchers and the feeds.
fn deliver(log: &Log, pass: Published) {
    let pass = Arc::new(pass);
    let mut state = lock(&log.state);
    state.feeds.retain(|f| f.send(pass.clone()).is_ok());
    let mut touched: HashSet<ChannelCode> = HashSet::new();
    for e in pass.events.iter() {
        let log = state.channels.entry(e.channel.clone()).or_default();
        log.seq = log.seq.max(e.seq);
        log.last.insert(e.sku.clone(), e.clone());
        log.watchers.retain(|w| w.strong_count() > 0);
        for w in log.watchers.iter().filter_map(Weak::upgrade) {
            lock(&w.pending).insert(e.sku.clone(), e.clone());
        }
        touched.insert(e.channel.clone());
    }
    for channel in touched {
        if let Some(log) = state.channels.get(&channel) {
            for w in log.watchers.iter().filter_map(Weak::upgrade) {
                w.notify.notify_one();
            }
        }
    }
}
