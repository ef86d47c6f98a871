//! The Redis mirror: published levels, pools and the level-change stream,
//! for consumers that do not speak gRPC.
//!
//! It owns nothing but what it writes to Redis. It never changes stock, and
//! Redis holds nothing that cannot be rebuilt from the store: every key below
//! is rewritten from memory (itself loaded from the store) by a full resync.
//!
//! # Keys (prefix `stockpool` unless configured)
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `<prefix>:published:<channel>` | hash | field SKU → published quantity (API.md) |
//! | `<prefix>:events:<channel>` | stream | entries `sku`, `published`, `atp`, `open`, `seq`, `MAXLEN ~ N` (API.md, plus `open`) |
//! | `<prefix>:pools:<sku>` | hash | fields `<warehouse>:on_hand`, `<warehouse>:reserved`, `<warehouse>:version`, for every declared warehouse |
//! | `<prefix>:mirror` | hash | `instance` (this process's mirror id), `resynced_at_ms`: the mirror's own bookkeeping |
//! | `<prefix>:mirror:tmp` | hash | scratch key of a resync, renamed over its target |
//!
//! # How it runs
//!
//! A task consumes [`Publisher::feed`]: after every commit that carried
//! levels (once its events are stored) it writes, in one pipeline, the HSET of each event's
//! published figure, its XADD to the channel's stream, and the pool hash of
//! every SKU the pass touched. It is off the acknowledgement path: a
//! reservation never waits for Redis, and Redis being slow or down never
//! fails or slows one.
//!
//! # Resync
//!
//! At start, after any failed write, and when `<prefix>:mirror` no longer
//! names this process (Redis restarted or was flushed while idle: checked
//! every second), the mirror rewrites every published hash from
//! [`Publisher::current`] and every pool hash from the engine, each hash
//! built in the scratch key and RENAMEd over its target, so a reader never
//! sees a half-written hash. It retries with backoff (100ms doubling to 2s)
//! until Redis answers.
//!
//! Streams are an event bus and are not rewritten: after a Redis loss they
//! miss the changes made while it was gone (those the mirror could not keep,
//! see below), so a consumer that sees its stream vanish or its group
//! disappear re-reads the published hashes, then reads the stream on.
//! Delivery to a stream is at least once: a pipeline that failed half way is
//! sent again whole, so consumers skip entries whose `seq` is not above the
//! last one they handled (per channel).
//!
//! # Memory while Redis is down
//!
//! The feed is unbounded, so the task keeps reading it during an outage.
//! Passes collapse into a backlog: "full resync needed" (which makes the
//! changed-SKU set unnecessary, so it is dropped) plus at most
//! [`BACKLOG_EVENTS`] events kept for the streams; past that the events are
//! dropped too (the streams get a gap, the hashes get the resync). Memory is
//! bounded by that cap, whatever the length of the outage.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{Published, Publisher};
use crate::domain::{ChannelCode, Sku};
use crate::engine::{Engine, StockLevel};
use crate::store::ChannelEvent;

/// The key prefix API.md documents.
pub const DEFAULT_PREFIX: &str = "stockpool";
/// Approximate length each channel stream is trimmed to.
pub const DEFAULT_STREAM_MAXLEN: u64 = 100_000;
/// Events kept for the streams while Redis does not answer; beyond, they
/// are dropped (the hashes are resynced anyway): memory stays bounded.
pub const BACKLOG_EVENTS: usize = 50_000;

/// Commands per pipeline in a resync, so no single request is big enough
/// to hit the response timeout on a large catalog.
const CHUNK: usize = 2_000;
/// Fields per HSET when a hash is rebuilt.
const HSET_FIELDS: usize = 500;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Failed attempts after which the connection manager is rebuilt, in case
/// its connection is stuck in an error it does not reconnect on.
const REBUILD_AFTER: u32 = 3;

/// Where the mirror writes and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://[user[:password]@]host[:port][/db]`.
    pub url: String,
    /// Key prefix (API.md: `stockpool`).
    pub prefix: String,
    /// `MAXLEN ~` of each channel stream.
    pub stream_maxlen: u64,
    /// How often the mirror checks that Redis still holds it, so a Redis
    /// that restarted empty while nothing changed is refilled.
    pub check_every: Duration,
}

impl RedisConfig {
    /// A checked configuration: the URL must be `redis://` (`rediss://`
    /// needs TLS, which this build does not include) and parse; the prefix
    /// must be non-empty without spaces; the stream length at least 1.
    pub fn resolve(
        url: &str,
        prefix: Option<String>,
        stream_maxlen: Option<u64>,
    ) -> anyhow::Result<RedisConfig> {
        let shown = redact(url);
        let scheme = url.split_once("://").map(|(s, _)| s);
        match scheme {
            Some("redis") => {}
            Some("rediss") => anyhow::bail!(
                "--redis-url {shown}: rediss:// (TLS) is not built into this version; \
                 use redis:// on a trusted network or through a TLS tunnel"
            ),
            _ => anyhow::bail!(
                "--redis-url {shown}: expected redis://host[:port][/db] \
                 (or rediss:// for TLS, not built into this version)"
            ),
        }
        redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("--redis-url {shown}"))?;
        let prefix = prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_string());
        if prefix.is_empty() || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            anyhow::bail!("redis_prefix {prefix:?}: must be non-empty, without spaces");
        }
        let stream_maxlen = stream_maxlen.unwrap_or(DEFAULT_STREAM_MAXLEN);
        if stream_maxlen == 0 {
            anyhow::bail!("redis_stream_maxlen: must be at least 1");
        }
        Ok(RedisConfig {
            url: url.to_string(),
            prefix,
            stream_maxlen,
            check_every: Duration::from_secs(1),
        })
    }
}

/// The URL without its password, for messages and logs.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://***@{host}"),
        _ => url.to_string(),
    }
}

/// Key names: the public contract of API.md, plus the pool mirror.
struct Keys {
    prefix: String,
}

impl Keys {
    fn published(&self, channel: &ChannelCode) -> String {
        format!("{}:published:{channel}", self.prefix)
    }
    fn events(&self, channel: &ChannelCode) -> String {
        format!("{}:events:{channel}", self.prefix)
    }
    fn pools(&self, sku: &Sku) -> String {
        format!("{}:pools:{sku}", self.prefix)
    }
    fn mirror(&self) -> String {
        format!("{}:mirror", self.prefix)
    }
    fn tmp(&self) -> String {
        format!("{}:mirror:tmp", self.prefix)
    }
}

/// What the mirror still has to write: passes collapse here while a write
/// is in flight or Redis is down.
#[derive(Debug, Default)]
struct Backlog {
    /// Every hash must be rewritten (start, or after a failure).
    resync: bool,
    /// Pools to rewrite; unused (kept empty) while `resync` is set.
    skus: BTreeSet<Sku>,
    /// Events not yet written, oldest first, at most [`BACKLOG_EVENTS`].
    events: Vec<ChannelEvent>,
    /// Events dropped since the last report (stream gap).
    dropped: u64,
}

impl Backlog {
    fn is_empty(&self) -> bool {
        !self.resync && self.skus.is_empty() && self.events.is_empty()
    }

    fn add(&mut self, pass: &Published) {
        if !self.resync {
            self.skus.extend(pass.skus.iter().cloned());
        }
        self.push_events(pass.events.iter().cloned());
    }

    fn push_events(&mut self, events: impl ExactSizeIterator<Item = ChannelEvent>) {
        if self.events.len() + events.len() > BACKLOG_EVENTS {
            // Too much to keep: the hashes come back by resync, the
            // streams get a gap.
            self.dropped += (self.events.len() + events.len()) as u64;
            self.events = Vec::new();
            self.need_resync();
        } else {
            self.events.extend(events);
        }
    }

    fn need_resync(&mut self) {
        self.resync = true;
        self.skus = BTreeSet::new();
    }

    /// Puts back a write that failed, in front of what arrived meanwhile.
    fn restore(&mut self, mut failed: Backlog) {
        let newer = std::mem::take(self);
        failed.need_resync();
        failed.dropped += newer.dropped;
        failed.push_events(newer.events.into_iter());
        *self = failed;
    }
}

/// Commands grouped into pipelines of at most [`CHUNK`] commands, sent in
/// order on one connection.
struct Batches {
    done: Vec<Pipeline>,
    current: Pipeline,
}

impl Batches {
    fn new() -> Batches {
        Batches {
            done: Vec::new(),
            current: redis::pipe(),
        }
    }

    fn push(&mut self, cmd: Cmd) {
        self.current.add_command(cmd).ignore();
        if self.current.len() >= CHUNK {
            self.done
                .push(std::mem::replace(&mut self.current, redis::pipe()));
        }
    }

    fn finish(mut self) -> Vec<Pipeline> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

/// The running mirror.
pub struct RedisMirror {
    config: RedisConfig,
    keys: Keys,
    engine: Engine,
    publisher: Publisher,
    feed: mpsc::UnboundedReceiver<Arc<Published>>,
    client: redis::Client,
    conn: ConnectionManager,
    /// Written to `<prefix>:mirror`: when Redis no longer holds it, Redis
    /// lost the mirror.
    instance: String,
}

impl RedisMirror {
    /// Subscribes to the publisher's feed and starts mirroring until `stop`
    /// turns true. Never connects here: a Redis that is down at start is
    /// filled once it answers.
    pub fn start(
        config: RedisConfig,
        engine: Engine,
        publisher: &Publisher,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<JoinHandle<()>> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("--redis-url {}", redact(&config.url)))?;
        let conn = connect(&client)?;
        let mirror = RedisMirror {
            keys: Keys {
                prefix: config.prefix.clone(),
            },
            config,
            engine,
            feed: publisher.feed(),
            publisher: publisher.clone(),
            client,
            conn,
            instance: uuid::Uuid::new_v4().to_string(),
        };
        tracing::info!(
            redis = %redact(&mirror.config.url),
            prefix = %mirror.config.prefix,
            "Redis mirror started"
        );
        Ok(tokio::spawn(mirror.run(stop)))
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backlog = Backlog {
            resync: true,
            ..Backlog::default()
        };
        let mut backoff = MIN_BACKOFF;
        let mut failures: u32 = 0;
        let mut check = tokio::time::interval(self.config.check_every);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A server that is no longer the active one writes nothing more:
            // its successor's mirror resyncs every hash from its own memory.
            // An isolated one (its lease lapsed) pauses, and resyncs if it
            // is renewed: a pipeline skipped meanwhile is written again.
            if *stop.borrow() {
                break;
            }
            if !self.engine.is_current() {
                let resumed = tokio::select! {
                    current = self.engine.until_current() => current,
                    _ = stop.changed() => false,
                };
                if !resumed {
                    break;
                }
                backlog.need_resync();
                continue;
            }
            self.drain(&mut backlog);
            if backlog.is_empty() {
                tokio::select! {
                    pass = self.feed.recv() => match pass {
                        Some(p) => backlog.add(&p),
                        None => break,
                    },
                    _ = check.tick() => {
                        match self.still_mirrored().await {
                            Ok(true) => {}
                            Ok(false) => {
                                tracing::warn!("Redis no longer holds the mirror (restarted or flushed); resyncing");
                                backlog.need_resync();
                            }
                            Err(e) => {
                                self.failed(&e, failures);
                                failures += 1;
                                backlog.need_resync();
                                if !self.wait(&mut backlog, &mut stop, &mut backoff).await {
                                    break;
                                }
                            }
                        }
                    }
                    _ = stop.changed() => {}
                }
                continue;
            }
            if backlog.resync && failures > 0 {
                // Still down? A PING costs less than building a resync.
                if let Err(e) = self.ping().await {
                    self.failed(&e, failures);
                    failures += 1;
                    if !self.wait(&mut backlog, &mut stop, &mut backoff).await {
                        break;
                    }
                    continue;
                }
                self.drain(&mut backlog);
            }
            let work = std::mem::take(&mut backlog);
            let resync = work.resync;
            // Built with no await after the drain above: a resync snapshot
            // covers every event taken from the feed so far.
            let (pipes, keys) = self.plan(&work);
            match self.send(pipes).await {
                Ok(()) => {
                    if resync {
                        metrics::counter!(crate::telemetry::REDIS_RESYNCS).increment(1);
                        tracing::info!(keys, after_failures = failures, "Redis mirror resynced");
                    }
                    if work.dropped > 0 {
                        tracing::warn!(
                            dropped = work.dropped,
                            "Redis was unavailable too long to keep every stream event; \
                             the streams have a gap (the hashes were resynced)"
                        );
                    }
                    failures = 0;
                    backoff = MIN_BACKOFF;
                }
                Err(e) => {
                    self.failed(&e, failures);
                    failures += 1;
                    backlog.restore(work);
                    if !self.wait(&mut backlog, &mut stop, &mut backoff).await {
                        break;
                    }
                }
            }
        }
        self.flush_at_stop().await;
    }

    /// Takes every pass waiting in the feed.
    fn drain(&mut self, backlog: &mut Backlog) {
        while let Ok(pass) = self.feed.try_recv() {
            backlog.add(&pass);
        }
    }

    /// Counts and logs a failure: loudly the first time, quietly while the
    /// outage lasts. Rebuilds the connection after a few in a row.
    fn failed(&mut self, e: &redis::RedisError, failures: u32) {
        metrics::counter!(crate::telemetry::REDIS_MIRROR_ERRORS).increment(1);
        if failures == 0 {
            tracing::warn!(error = %e, "Redis mirror write failed; resyncing once Redis answers");
        } else {
            tracing::debug!(error = %e, failures, "Redis mirror still failing");
        }
        if (failures + 1).is_multiple_of(REBUILD_AFTER) {
            match connect(&self.client) {
                Ok(conn) => self.conn = conn,
                Err(e) => tracing::debug!(error = %e, "rebuilding the Redis connection"),
            }
        }
    }

    /// Sleeps the backoff while still reading the feed (so it does not
    /// grow); false when the service stops meanwhile.
    async fn wait(
        &mut self,
        backlog: &mut Backlog,
        stop: &mut watch::Receiver<bool>,
        backoff: &mut Duration,
    ) -> bool {
        let until = tokio::time::Instant::now() + *backoff;
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        loop {
            tokio::select! {
                pass = self.feed.recv() => match pass {
                    Some(p) => backlog.add(&p),
                    None => return false,
                },
                _ = tokio::time::sleep_until(until) => return true,
                _ = stop.changed() => return false,
            }
        }
    }

    async fn ping(&mut self) -> redis::RedisResult<()> {
        redis::cmd("PING").exec_async(&mut self.conn).await
    }

    /// Whether Redis still holds this mirror (false after a restart or a
    /// flush).
    async fn still_mirrored(&mut self) -> redis::RedisResult<bool> {
        let instance: Option<String> = redis::cmd("HGET")
            .arg(self.keys.mirror())
            .arg("instance")
            .query_async(&mut self.conn)
            .await?;
        Ok(instance.as_deref() == Some(self.instance.as_str()))
    }

    /// The commands for `work`, and how many keys a resync rewrites.
    fn plan(&self, work: &Backlog) -> (Vec<Pipeline>, usize) {
        let mut out = Batches::new();
        let mut keys = 0;
        if work.resync {
            keys = self.plan_resync(&mut out);
        } else {
            for e in &work.events {
                let mut hset = redis::cmd("HSET");
                hset.arg(self.keys.published(&e.channel))
                    .arg(e.sku.as_str())
                    .arg(e.published);
                out.push(hset);
            }
            let skus: Vec<Sku> = work.skus.iter().cloned().collect();
            if !skus.is_empty() {
                for (sku, levels) in by_sku(self.engine.get_stock(&skus)) {
                    out.push(pool_hset(self.keys.pools(&sku), &levels));
                }
            }
        }
        for e in &work.events {
            let mut xadd = redis::cmd("XADD");
            xadd.arg(self.keys.events(&e.channel))
                .arg("MAXLEN")
                .arg("~")
                .arg(self.config.stream_maxlen)
                .arg("*")
                .arg("sku")
                .arg(e.sku.as_str())
                .arg("published")
                .arg(e.published)
                .arg("atp")
                .arg(e.atp)
                .arg("open")
                .arg(e.open)
                .arg("seq")
                .arg(e.seq);
            out.push(xadd);
        }
        if work.resync {
            let mut mark = redis::cmd("HSET");
            mark.arg(self.keys.mirror())
                .arg("instance")
                .arg(&self.instance)
                .arg("resynced_at_ms")
                .arg(self.engine.now());
            out.push(mark);
        }
        (out.finish(), keys)
    }

    /// Every published hash (every declared channel, and any channel told
    /// something) and every pool hash, each replaced whole.
    fn plan_resync(&self, out: &mut Batches) -> usize {
        let mut channels: BTreeMap<ChannelCode, Vec<(Sku, i64)>> = self
            .engine
            .catalog()
            .channels
            .iter()
            .map(|c| (c.code.clone(), Vec::new()))
            .collect();
        for e in self.publisher.current() {
            channels
                .entry(e.channel)
                .or_default()
                .push((e.sku, e.published));
        }
        let mut keys = 0;
        for (channel, levels) in &channels {
            let fields: Vec<(&str, i64)> = levels.iter().map(|(s, p)| (s.as_str(), *p)).collect();
            self.replace_hash(out, self.keys.published(channel), &fields);
            keys += 1;
        }
        for (sku, levels) in by_sku(self.engine.get_stock(&[])) {
            let fields = pool_fields(&levels);
            let fields: Vec<(&str, i64)> = fields.iter().map(|(f, v)| (f.as_str(), *v)).collect();
            self.replace_hash(out, self.keys.pools(&sku), &fields);
            keys += 1;
        }
        keys
    }

    /// Replaces `key` with exactly `fields`: built in the scratch key and
    /// renamed over it (readers never see it half written); deleted when
    /// there is nothing to hold.
    fn replace_hash(&self, out: &mut Batches, key: String, fields: &[(&str, i64)]) {
        if fields.is_empty() {
            out.push(redis::cmd("DEL").arg(&key).clone());
            return;
        }
        let tmp = self.keys.tmp();
        out.push(redis::cmd("DEL").arg(&tmp).clone());
        for chunk in fields.chunks(HSET_FIELDS) {
            let mut hset = redis::cmd("HSET");
            hset.arg(&tmp);
            for (f, v) in chunk {
                hset.arg(*f).arg(*v);
            }
            out.push(hset);
        }
        out.push(redis::cmd("RENAME").arg(&tmp).arg(&key).clone());
    }

    async fn send(&mut self, pipes: Vec<Pipeline>) -> redis::RedisResult<()> {
        for pipe in pipes {
            // Checked before every pipeline, so a server that resumes after
            // a pause past its lease overwrites nothing its successor wrote;
            // the loop then stops.
            if !self.engine.is_current() {
                return Ok(());
            }
            pipe.exec_async(&mut self.conn).await?;
        }
        Ok(())
    }

    /// One last try at what is waiting when the service stops, bounded in
    /// time; what does not make it is resynced at the next start.
    async fn flush_at_stop(&mut self) {
        let mut backlog = Backlog::default();
        self.drain(&mut backlog);
        if backlog.is_empty() || backlog.resync {
            return;
        }
        let (pipes, _) = self.plan(&backlog);
        match tokio::time::timeout(MAX_BACKOFF, self.send(pipes)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "last Redis mirror write at stop"),
            Err(_) => tracing::debug!("last Redis mirror write at stop timed out"),
        }
    }
}

/// A lazy connection manager with short timeouts; it reconnects by itself,
/// and the mirror's own loop paces the retries.
fn connect(client: &redis::Client) -> anyhow::Result<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1)
        .set_min_delay(MIN_BACKOFF)
        .set_max_delay(MAX_BACKOFF);
    ConnectionManager::new_lazy_with_config(client.clone(), config)
        .map_err(|e| anyhow::anyhow!("Redis connection manager: {e}"))
}

/// Levels grouped by SKU, in the order `get_stock` returned them.
fn by_sku(levels: Vec<StockLevel>) -> Vec<(Sku, Vec<StockLevel>)> {
    let mut out: Vec<(Sku, Vec<StockLevel>)> = Vec::new();
    for l in levels {
        match out.last_mut() {
            Some((sku, v)) if *sku == l.sku => v.push(l),
            _ => out.push((l.sku.clone(), vec![l])),
        }
    }
    out
}

/// The pool hash of one SKU: three fields per warehouse.
fn pool_fields(levels: &[StockLevel]) -> Vec<(String, i64)> {
    let mut out = Vec::with_capacity(levels.len() * 3);
    for l in levels {
        out.push((format!("{}:on_hand", l.warehouse), l.pool.on_hand));
        out.push((format!("{}:reserved", l.warehouse), l.pool.reserved));
        out.push((
            format!("{}:version", l.warehouse),
            i64::try_from(l.pool.version).unwrap_or(i64::MAX),
        ));
    }
    out
}

/// HSET of one SKU's pool hash (every declared warehouse, so no field is
/// left stale but a removed warehouse's, which the next resync drops).
fn pool_hset(key: String, levels: &[StockLevel]) -> Cmd {
    let mut hset = redis::cmd("HSET");
    hset.arg(key);
    for (f, v) in pool_fields(levels) {
        hset.arg(f).arg(v);
    }
    hset
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> ChannelEvent {
        ChannelEvent {
            channel: ChannelCode::parse("shopify").unwrap(),
            seq,
            sku: Sku::parse("TEE").unwrap(),
            published: 1,
            atp: 1,
            open: 0,
            at_ms: 0,
        }
    }

    fn pass(events: usize) -> Published {
        Published {
            skus: vec![Sku::parse("TEE").unwrap()],
            events: (1..=events as u64).map(event).collect(),
        }
    }

    #[test]
    fn a_long_outage_collapses_into_a_resync_with_bounded_events() {
        let mut b = Backlog::default();
        for _ in 0..(BACKLOG_EVENTS / 1000 + 5) {
            b.add(&pass(1000));
            assert!(b.events.len() <= BACKLOG_EVENTS);
        }
        assert!(b.resync, "overflow asks for a resync");
        assert!(b.skus.is_empty(), "a resync needs no SKU list");
        assert!(b.dropped > 0, "the gap is counted");
    }

    #[test]
    fn a_failed_write_goes_back_in_front_of_newer_passes_and_asks_for_a_resync() {
        let mut b = Backlog::default();
        b.add(&pass(2));
        let failed = std::mem::take(&mut b);
        b.add(&Published {
            skus: vec![],
            events: vec![event(3)],
        });
        b.restore(failed);
        assert!(b.resync);
        let seqs: Vec<u64> = b.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    #[test]
    fn urls_other_than_redis_are_refused_with_the_reason() {
        assert!(RedisConfig::resolve("redis://127.0.0.1:6379", None, None).is_ok());
        let tls = RedisConfig::resolve("rediss://h:6380", None, None).unwrap_err();
        assert!(tls.to_string().contains("TLS"), "{tls}");
        let other = RedisConfig::resolve("http://h", None, None).unwrap_err();
        assert!(other.to_string().contains("redis://"), "{other}");
        let secret = RedisConfig::resolve("rediss://u:hunter2@h", None, None).unwrap_err();
        assert!(!format!("{secret:#}").contains("hunter2"), "{secret:#}");
        assert!(RedisConfig::resolve("redis://h", Some(String::new()), None).is_err());
        assert!(RedisConfig::resolve("redis://h", None, Some(0)).is_err());
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let c = RedisConfig::resolve("redis://h", None, None).unwrap();
        assert_eq!(c.prefix, "stockpool");
        assert_eq!(c.stream_maxlen, 100_000);
    }
}
