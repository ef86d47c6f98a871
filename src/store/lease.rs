//! The Postgres lease: which one of several `stockpool serve` processes on
//! one database is the active one, and the fencing epoch that makes a
//! deposed one harmless.
//!
//! It owns the `leader` row (`migrations/postgres/0009_leader.sql`), the
//! connection each server campaigns and renews on, and [`Tenure`], the
//! holder's own view of whether it still holds the lease. It decides nothing
//! about stock; the store's commits check the epoch (`stockpool_fence`) and
//! the server steps down when the tenure ends.
//!
//! # The protocol
//!
//! - **Row.** `leader` has one row: `epoch` (raised by every takeover),
//!   `holder`, the holder's lease session (`holder_pid` and its
//!   `backend_start`) and `expires_at`, by the database's clock.
//! - **Taking over.** A standby looks every `poll_every` on a connection of
//!   its own. The lease is free when it has expired, or when the holder's
//!   lease session no longer exists: a process that exits, is killed or
//!   loses its connection takes its session with it, so a standby takes over
//!   within one poll instead of waiting for the expiry. A free lease is taken
//!   by one `UPDATE` that raises the epoch and names the new holder; two
//!   standbys racing both run it, the row lock orders them, and the second
//!   finds the lease no longer free.
//! - **Holding.** The holder renews on the same connection every
//!   `renew_every`. It counts its lease from the moment it *sent* its last
//!   successful renewal: the database computed `expires_at` from its own
//!   clock after receiving it, so by the database the lease lasts at least
//!   until `sent + ttl`. The holder gives up `ttl / 5` earlier (a margin for
//!   the two clocks' rates), measured on the monotonic clock, which keeps
//!   running while the process is stopped. A renewal that touches no row
//!   (the epoch moved on) ends the tenure.
//! - **Lapsing.** No successful renewal before that deadline *lapses* the
//!   tenure: the holder acts no more (no commit, no push), but it has not
//!   learned that anyone took over, so it keeps its memory and keeps
//!   renewing, every 50 ms on a fresh connection while earlier attempts
//!   may still hang behind a silent network. A renewal that still finds
//!   its epoch in the row (`WHERE epoch = e`) makes the tenure held again,
//!   with the same epoch and the same memory; one that finds the epoch
//!   moved on ends it. Renewing a lease that expired meanwhile is sound:
//!   nobody took over (the epoch is unchanged), and if someone does later,
//!   the fence below stops every commit of the old epoch whatever its
//!   holder believes.
//! - **Releasing.** A server shutting down sets `expires_at` to `-infinity`
//!   after its last commit: its successor takes over at its next poll.
//!
//! # Why a deposed server can never commit after its successor took over
//!
//! The argument rests on row locks, not on time, so no pause, partition or
//! clock can break it:
//!
//! 1. Every commit's transaction starts with `stockpool_fence(e)`, a
//!    `SELECT … FROM leader WHERE epoch = e FOR SHARE`, and fails (SQLSTATE
//!    `SPF01`, nothing written) when no row matches.
//! 2. A takeover is an `UPDATE` of that row, whose lock conflicts with
//!    `FOR SHARE`. For any commit transaction T of epoch `e` and the takeover
//!    U to `e + 1`, Postgres either (a) grants T's share lock first, and U
//!    waits until T has committed or rolled back, or (b) grants U first, and
//!    T's `FOR SHARE` waits for U, then re-reads the row's newest version
//!    (READ COMMITTED), finds `e + 1`, and fails. So every commit of epoch
//!    `e` that succeeds committed before U.
//! 3. The successor loads its state after U committed, in a snapshot that
//!    therefore holds all of them, and commits only after that. A deposed
//!    server's commit can only fail, whenever it is attempted: after
//!    SIGCONT, after a partition heals, after any pause.
//! 4. A server paused *inside* T (after its fence, before `COMMIT`) holds
//!    its share lock, and U waits. Every store connection sets
//!    `idle_in_transaction_session_timeout` to the lease's `ttl`: the
//!    database ends such a transaction (and rolls it back), and the
//!    takeover, retried at each poll under a `lock_timeout`, goes through.
//!    When the paused server resumes, its `COMMIT` fails.
//! 5. A `COMMIT` whose answer was lost is settled through `commits` (see
//!    `postgres.rs`): it either committed before U, and the successor loaded
//!    it, or it did not commit at all. Whatever the deposed server then
//!    answers is true; nothing it acknowledges is missing from its
//!    successor.
//!
//! Beyond commits, the holder stops acting the moment its tenure lapses or
//! ends, even before it has heard of a successor: the store refuses commits
//! without asking the database, the Odoo dispatcher and the Redis mirror
//! check [`Tenure::is_held`] before every push and write, and the server is
//! isolated (reads from memory only) until the tenure is held again, or
//! steps down to standby once it has ended (see `server.rs`). A takeover by
//! expiry can only come after the holder's own deadline. A takeover because
//! the holder's session vanished can come earlier (the holder's connection
//! died while the process lives); the holder then fails its next renewal
//! within `renew_every`, and its commits are fenced meanwhile.
//!
//! An advisory lock on a dedicated connection would do the "session gone"
//! half of this on its own, but a stopped process (SIGSTOP) or a silent
//! partition keeps its connection, and with it the lock, open indefinitely;
//! the row's expiry bounds both.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::Connection;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::StoreError;

/// How long a lease lasts, and how often it is renewed and looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimings {
    /// How long a lease lasts past its last renewal, by the database's
    /// clock: the longest a paused or cut-off active can delay a takeover.
    /// Also each store connection's `idle_in_transaction_session_timeout`.
    pub ttl: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
    /// How often a standby looks whether it may take over.
    pub poll_every: Duration,
}

impl Default for LeaseTimings {
    fn default() -> Self {
        LeaseTimings {
            ttl: Duration::from_secs(5),
            renew_every: Duration::from_secs(1),
            poll_every: Duration::from_millis(250),
        }
    }
}

impl LeaseTimings {
    /// Refuses timings the protocol cannot keep: the holder must be able to
    /// renew at least three times per lease.
    pub fn check(&self) -> Result<(), String> {
        if self.ttl < Duration::from_millis(300) {
            return Err(format!(
                "the lease ({} ms) must last at least 300 ms",
                self.ttl.as_millis()
            ));
        }
        if self.renew_every.is_zero() || self.renew_every * 3 > self.ttl {
            return Err(format!(
                "the renewal interval ({} ms) must be more than 0 and at most a third of the lease ({} ms)",
                self.renew_every.as_millis(),
                self.ttl.as_millis()
            ));
        }
        if self.poll_every < Duration::from_millis(10) || self.poll_every > self.ttl {
            return Err(format!(
                "the standby poll interval ({} ms) must be between 10 ms and the lease ({} ms)",
                self.poll_every.as_millis(),
                self.ttl.as_millis()
            ));
        }
        Ok(())
    }

    /// What the holder gives up of each lease, for the difference in rate
    /// between its clock and the database's.
    fn margin(&self) -> Duration {
        self.ttl / 5
    }

    fn ttl_ms(&self) -> f64 {
        self.ttl.as_secs_f64() * 1000.0
    }
}

/// The holder's own view of its lease: the epoch it took over with, and
/// until when it may act. Cheap to clone; every clone sees the same tenure.
///
/// A tenure is in one of three states:
/// - **held**: not ended, and its deadline has not passed: the holder acts;
/// - **lapsed**: not ended, but its deadline passed without a renewal (the
///   database could not be reached in time): the holder commits nothing and
///   pushes nothing, but keeps its memory and keeps trying to renew; a
///   renewal that still finds its epoch in the row makes it held again;
/// - **ended**: another server took over (a renewal touched no row, or a
///   commit was fenced), or the lease was released or dropped. It never
///   restarts.
#[derive(Clone)]
pub struct Tenure {
    inner: Arc<TenureInner>,
}

struct TenureInner {
    epoch: u64,
    /// Until when the holder may act (monotonic clock); every change is
    /// seen by those waiting for a renewal.
    until: watch::Sender<Instant>,
    /// Why the tenure ended, once it has; it never restarts.
    ended: watch::Sender<Option<Arc<str>>>,
    /// Why the last renewal failed, while they fail ('' after a success).
    trouble: Mutex<String>,
}

impl Tenure {
    fn new(epoch: u64, until: Instant) -> Tenure {
        Tenure {
            inner: Arc::new(TenureInner {
                epoch,
                until: watch::channel(until).0,
                ended: watch::channel(None).0,
                trouble: Mutex::new(String::new()),
            }),
        }
    }

    /// The fencing epoch every commit of this tenure checks.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    fn until(&self) -> Instant {
        *self.inner.until.borrow()
    }

    /// Moves the deadline forward (never back).
    fn extend(&self, until: Instant) {
        self.inner.until.send_if_modified(|current| {
            if until > *current {
                *current = until;
                true
            } else {
                false
            }
        });
    }

    /// Whether the holder may still act: the tenure has not ended and its
    /// deadline has not passed.
    pub fn is_held(&self) -> bool {
        self.inner.ended.borrow().is_none() && Instant::now() < self.until()
    }

    /// Whether the tenure has lapsed: not ended, but its deadline passed
    /// before a renewal got through. The holder waits to renew or to learn
    /// it was deposed.
    pub fn is_lapsed(&self) -> bool {
        self.inner.ended.borrow().is_none() && Instant::now() >= self.until()
    }

    /// Ends the tenure (the first reason given is kept).
    pub fn end(&self, why: impl Into<Arc<str>>) {
        let why = why.into();
        self.inner.ended.send_if_modified(|ended| {
            if ended.is_some() {
                return false;
            }
            *ended = Some(why);
            true
        });
    }

    /// Why the tenure ended, once it has.
    pub fn ended(&self) -> Option<Arc<str>> {
        self.inner.ended.borrow().clone()
    }

    /// Why the renewals fail, while they do.
    pub fn trouble(&self) -> Option<String> {
        let trouble = self.inner.trouble.lock().unwrap_or_else(|p| p.into_inner());
        (!trouble.is_empty()).then(|| trouble.clone())
    }

    fn set_trouble(&self, why: String) {
        *self.inner.trouble.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// Resolves once the tenure has ended, with the reason. A lapse does
    /// not end it (see [`Self::lapsed`]).
    pub async fn lost(&self) -> Arc<str> {
        let mut ended = self.inner.ended.subscribe();
        loop {
            if let Some(why) = ended.borrow_and_update().clone() {
                return why;
            }
            if ended.changed().await.is_err() {
                // Unreachable: `self` holds the sender.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Resolves once the tenure is no longer held: its deadline passed
    /// without a renewal, or it ended.
    pub async fn lapsed(&self) {
        let mut until = self.inner.until.subscribe();
        let mut ended = self.inner.ended.subscribe();
        loop {
            let deadline = *until.borrow_and_update();
            if ended.borrow_and_update().is_some() || Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                _ = until.changed() => {}
                _ = ended.changed() => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    /// Resolves once the tenure is held again after a lapse (a renewal got
    /// through), or has ended; true when held.
    pub async fn regained(&self) -> bool {
        let mut until = self.inner.until.subscribe();
        let mut ended = self.inner.ended.subscribe();
        loop {
            until.borrow_and_update();
            if ended.borrow_and_update().is_some() {
                return false;
            }
            if self.is_held() {
                return true;
            }
            tokio::select! {
                _ = until.changed() => {}
                _ = ended.changed() => {}
            }
        }
    }
}

/// The lease row as a standby last read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leader {
    /// The epoch of the current (or last) holder; 0: never held.
    pub epoch: u64,
    /// Who holds it ('' when never held).
    pub holder: String,
}

/// What one look at the lease came to.
pub enum Campaign {
    /// This server holds the lease now, with a new epoch.
    Won(Lease),
    /// Another server holds it.
    Held(Leader),
}

/// A server's side of the election: its identity and the connection it
/// campaigns on (which becomes its lease session when it wins).
pub struct Elector {
    options: PgConnectOptions,
    identity: String,
    timings: LeaseTimings,
    conn: Option<PgConnection>,
}

/// Longest a look at the lease (connecting included) may take.
const CAMPAIGN_TIMEOUT: Duration = Duration::from_secs(3);

/// The lease is free: expired by the database's clock, or its holder's lease
/// session gone. Without the right to see other sessions' details,
/// `backend_start` reads NULL and the process id alone is compared.
const FREE: &str = "(l.expires_at < clock_timestamp() OR NOT EXISTS ( \
        SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.holder_pid \
          AND (a.backend_start IS NULL OR a.backend_start = l.holder_backend_start)))";

/// The backend start of this session, the second half of its identity.
const OWN_BACKEND_START: &str =
    "(SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())";

impl Elector {
    pub(super) fn new(options: &PgConnectOptions, identity: String, timings: LeaseTimings) -> Self {
        Elector {
            // A lock wait (a takeover behind commits in flight, a renewal
            // behind one) gives up and is retried rather than holding up
            // the poll or the renewal.
            options: options
                .clone()
                .application_name("stockpool lease")
                .options([("lock_timeout", "1s"), ("statement_timeout", "3s")]),
            identity,
            timings,
            conn: None,
        }
    }

    /// The lease's timings.
    pub fn timings(&self) -> LeaseTimings {
        self.timings
    }

    /// Looks at the lease once and takes it when it is free. Err: the
    /// database could not be asked (the look is repeated at the next poll).
    pub async fn campaign(&mut self) -> Result<Campaign, StoreError> {
        match tokio::time::timeout(CAMPAIGN_TIMEOUT, self.look()).await {
            Ok(Ok(campaign)) => Ok(campaign),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e.into())
            }
            Err(_) => {
                self.conn = None;
                Err(sqlx::Error::PoolTimedOut.into())
            }
        }
    }

    async fn look(&mut self) -> Result<Campaign, sqlx::Error> {
        if self.conn.is_none() {
            self.conn = Some(PgConnection::connect_with(&self.options).await?);
        }
        let conn = self.conn.as_mut().expect("connected above");
        // `left_ms`: how long the holder's own lease still runs (None when
        // it released it, or nobody ever held it).
        let (epoch, holder, free, left_ms): (i64, String, bool, Option<i64>) =
            sqlx::query_as(&format!(
                "SELECT l.epoch, l.holder, {FREE}, \
                     CASE WHEN l.holder = '' OR l.expires_at = '-infinity' THEN NULL \
                     ELSE GREATEST(0, (EXTRACT(EPOCH FROM l.expires_at - clock_timestamp()) \
                         * 1000)::bigint) END \
                 FROM leader l WHERE l.id = 1"
            ))
            .fetch_one(&mut *conn)
            .await?;
        let seen = Leader {
            epoch: u64::try_from(epoch).unwrap_or(0),
            holder,
        };
        if !free {
            return Ok(Campaign::Held(seen));
        }
        let sent = Instant::now();
        let won: Option<i64> = sqlx::query_scalar(&format!(
            "UPDATE leader AS l SET epoch = l.epoch + 1, holder = $2, \
                 holder_pid = pg_backend_pid(), holder_backend_start = {OWN_BACKEND_START}, \
                 acquired_at = clock_timestamp(), renewed_at = clock_timestamp(), \
                 expires_at = clock_timestamp() + make_interval(secs => $3::float8 / 1000) \
             WHERE l.id = 1 AND l.epoch = $1 AND {FREE} RETURNING l.epoch"
        ))
        .bind(epoch)
        .bind(&self.identity)
        .bind(self.timings.ttl_ms())
        .fetch_optional(&mut *conn)
        .await?;
        let Some(epoch) = won else {
            // Another standby was faster, or the holder renewed meanwhile.
            return Ok(Campaign::Held(seen));
        };
        let epoch = u64::try_from(epoch).unwrap_or(0);
        let tenure = Tenure::new(epoch, sent + self.timings.ttl - self.timings.margin());
        let conn = self.conn.take().expect("connected above");
        let mut lease = Lease::start(conn, self.options.clone(), tenure, self.timings);
        lease.predecessor_until =
            left_ms.map(|ms| sent + Duration::from_millis(u64::try_from(ms).unwrap_or(0)));
        Ok(Campaign::Won(lease))
    }
}

/// A lease held: its renewal runs on a task of its own until the tenure
/// ends or the lease is released.
pub struct Lease {
    tenure: Tenure,
    /// Until when the previous holder may still believe it holds the lease
    /// (its own lease had not run out, or it ran out but was never
    /// released): None when it released the lease or there was none. Work
    /// with effects beyond the database (an Odoo push) waits past this,
    /// since the epoch fences only commits.
    predecessor_until: Option<Instant>,
    release: Option<oneshot::Sender<oneshot::Sender<()>>>,
    task: JoinHandle<()>,
}

impl Lease {
    fn start(
        conn: PgConnection,
        options: PgConnectOptions,
        tenure: Tenure,
        timings: LeaseTimings,
    ) -> Lease {
        let (release, asked) = oneshot::channel();
        let task = tokio::spawn(hold(conn, options, tenure.clone(), timings, asked));
        Lease {
            tenure,
            predecessor_until: None,
            release: Some(release),
            task,
        }
    }

    pub fn tenure(&self) -> Tenure {
        self.tenure.clone()
    }

    pub fn epoch(&self) -> u64 {
        self.tenure.epoch()
    }

    /// See [`Lease::predecessor_until`](Self): None when the previous holder
    /// released the lease (it had stopped all its work) or there was none.
    pub fn predecessor_until(&self) -> Option<Instant> {
        self.predecessor_until
    }

    /// Gives the lease up: ends the tenure and frees the row, so a standby
    /// takes over at its next poll. Waits at most a second for the
    /// database; a lease it could not free is taken over once its session
    /// is gone or it expires.
    pub async fn release(mut self) {
        if let Some(release) = self.release.take() {
            let (done, freed) = oneshot::channel();
            if release.send(done).is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(2), freed).await;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.task).await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Dropped without release: the renewal stops and the session
        // closes, which frees the lease for the standbys.
        self.tenure.end("the lease was dropped");
    }
}

/// Longest wait before a failed renewal is tried again while the tenure
/// is held.
const RENEW_RETRY: Duration = Duration::from_millis(200);

/// Once the tenure has lapsed, a new renewal attempt starts this often,
/// each on a fresh connection, without waiting for those still under way:
/// behind a network that went silent an attempt hangs until its timeout,
/// and the first one started after the network heals gets through.
const LAPSED_RETRY: Duration = Duration::from_millis(50);

/// Longest a renewal attempt (connecting included) may take once the
/// tenure has lapsed.
const LAPSED_ATTEMPT: Duration = Duration::from_secs(1);

/// Most renewal attempts under way at once while lapsed.
const LAPSED_PARALLEL: usize = 20;

/// Renews the lease every `renew_every` until the tenure ends or the lease
/// is released; reconnects when the connection fails. A lapsed tenure is
/// not given up: renewals go on until one gets through (the tenure is held
/// again, with the same epoch) or finds the epoch taken over (it ends).
async fn hold(
    conn: PgConnection,
    options: PgConnectOptions,
    tenure: Tenure,
    timings: LeaseTimings,
    mut release: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let epoch = i64::try_from(tenure.epoch()).unwrap_or(i64::MAX);
    let mut conn = Some(conn);
    let mut next = Instant::now() + timings.renew_every;
    loop {
        tokio::select! {
            biased;
            asked = &mut release => {
                tenure.end("the lease was released");
                if let (Ok(done), Some(c)) = (asked, conn.as_mut()) {
                    let freed = sqlx::query(
                        "UPDATE leader SET expires_at = '-infinity', holder_pid = NULL \
                         WHERE id = 1 AND epoch = $1",
                    )
                    .bind(epoch)
                    .execute(&mut *c);
                    match tokio::time::timeout(Duration::from_secs(1), freed).await {
                        Ok(Ok(_)) => tracing::info!(epoch, "lease released"),
                        Ok(Err(e)) => tracing::warn!(epoch, error = %crate::telemetry::chain(&e), "could not release the lease; a standby takes over once it expires"),
                        Err(_) => tracing::warn!(epoch, "could not release the lease in time; a standby takes over once it expires"),
                    }
                    let _ = done.send(());
                }
                break;
            }
            why = tenure.lost() => {
                tracing::debug!(epoch, %why, "lease renewal stops");
                break;
            }
            // At the deadline, the lapsed renewals start at once.
            _ = tenure.lapsed() => {}
            _ = tokio::time::sleep_until(next.into()) => {}
        }
        if tenure.is_lapsed() {
            drop(conn.take());
            match renew_lapsed(&options, &tenure, timings, &mut release).await {
                Some(renewed) => {
                    // Renewed on one of several connections: the next
                    // renewal, at once, names this one as the lease
                    // session (another attempt may have landed after it).
                    conn = Some(renewed);
                    next = Instant::now();
                    continue;
                }
                None => break,
            }
        }
        let sent = Instant::now();
        // A renewal may take until the deadline; past it, the lapsed
        // renewals take over.
        let attempt = tenure.until().saturating_duration_since(sent);
        let retry = timings.renew_every.min(RENEW_RETRY);
        match tokio::time::timeout(attempt, renew(&mut conn, &options, epoch, timings)).await {
            Ok(Ok(true)) => {
                tenure.set_trouble(String::new());
                tenure.extend(sent + timings.ttl - timings.margin());
                next = sent + timings.renew_every;
            }
            Ok(Ok(false)) => {
                tenure.end(format!("epoch {epoch} was taken over by another server"));
            }
            Ok(Err(e)) => {
                let why = crate::telemetry::chain(&e);
                if tenure.trouble().is_none() {
                    tracing::warn!(epoch, error = %why, "lease renewal failed; retrying");
                }
                tenure.set_trouble(why);
                conn = None;
                next = Instant::now() + retry;
            }
            Err(_) => {
                if tenure.trouble().is_none() {
                    tracing::warn!(epoch, "lease renewal got no answer in time; retrying");
                }
                tenure.set_trouble(format!(
                    "Postgres did not answer a renewal within {} ms",
                    attempt.as_millis()
                ));
                conn = None;
                next = Instant::now() + retry;
            }
        }
    }
    if let Some(c) = conn {
        let _ = tokio::time::timeout(Duration::from_secs(1), c.close()).await;
    }
}

/// Renews a lapsed tenure: starts an attempt every [`LAPSED_RETRY`], each
/// on a fresh connection, until one gets through (the tenure is held again;
/// its connection is returned) or finds the epoch taken over, the tenure
/// ends otherwise, or the lease is released (None for those three).
async fn renew_lapsed(
    options: &PgConnectOptions,
    tenure: &Tenure,
    timings: LeaseTimings,
    release: &mut oneshot::Receiver<oneshot::Sender<()>>,
) -> Option<PgConnection> {
    let epoch = i64::try_from(tenure.epoch()).unwrap_or(i64::MAX);
    let mut attempts = tokio::task::JoinSet::new();
    let mut next = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = &mut *release => {
                // Nothing to free: no connection reaches the database.
                tenure.end("the lease was released");
                return None;
            }
            _ = tenure.lost() => return None,
            Some(done) = attempts.join_next(), if !attempts.is_empty() => match done {
                Ok((sent, Ok(Some(conn)))) => {
                    tenure.set_trouble(String::new());
                    tenure.extend(sent + timings.ttl - timings.margin());
                    tracing::info!(epoch, "lease renewed after it had lapsed: still the holder");
                    return Some(conn);
                }
                Ok((_, Ok(None))) => {
                    tenure.end(format!("epoch {epoch} was taken over by another server"));
                    return None;
                }
                Ok((_, Err(why))) => tenure.set_trouble(why),
                Err(_) => {}
            },
            _ = tokio::time::sleep_until(next.into()), if attempts.len() < LAPSED_PARALLEL => {
                let options = options.clone();
                attempts.spawn(async move {
                    let sent = Instant::now();
                    let mut conn = None;
                    let renewed = tokio::time::timeout(
                        LAPSED_ATTEMPT,
                        renew(&mut conn, &options, epoch, timings),
                    )
                    .await;
                    let outcome = match renewed {
                        Ok(Ok(true)) => Ok(conn),
                        Ok(Ok(false)) => Ok(None),
                        Ok(Err(e)) => Err(crate::telemetry::chain(&e)),
                        Err(_) => Err(format!(
                            "Postgres did not answer a renewal within {} ms",
                            LAPSED_ATTEMPT.as_millis()
                        )),
                    };
                    (sent, outcome)
                });
                next = Instant::now() + LAPSED_RETRY;
            }
        }
    }
}

/// One renewal; Ok(false) when the epoch is no longer this holder's.
async fn renew(
    conn: &mut Option<PgConnection>,
    options: &PgConnectOptions,
    epoch: i64,
    timings: LeaseTimings,
) -> Result<bool, sqlx::Error> {
    if conn.is_none() {
        *conn = Some(PgConnection::connect_with(options).await?);
    }
    let c = conn.as_mut().expect("connected above");
    let touched = sqlx::query(&format!(
        "UPDATE leader SET renewed_at = clock_timestamp(), \
             expires_at = clock_timestamp() + make_interval(secs => $2::float8 / 1000), \
             holder_pid = pg_backend_pid(), holder_backend_start = {OWN_BACKEND_START} \
         WHERE id = 1 AND epoch = $1"
    ))
    .bind(epoch)
    .bind(timings.ttl_ms())
    .execute(&mut *c)
    .await?
    .rows_affected();
    Ok(touched == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_that_leave_fewer_than_three_renewals_per_lease_are_refused() {
        assert!(LeaseTimings::default().check().is_ok());
        let t = |ttl, renew, poll| LeaseTimings {
            ttl: Duration::from_millis(ttl),
            renew_every: Duration::from_millis(renew),
            poll_every: Duration::from_millis(poll),
        };
        assert!(t(3000, 1000, 250).check().is_ok());
        assert!(t(3000, 1001, 250).check().unwrap_err().contains("a third"));
        assert!(t(200, 50, 20).check().unwrap_err().contains("300 ms"));
        assert!(t(3000, 1000, 5).check().unwrap_err().contains("poll"));
        assert!(t(3000, 0, 250).check().is_err());
    }

    #[tokio::test]
    async fn a_tenure_lapses_at_its_deadline_is_held_again_when_renewed_and_never_restarts_once_ended(
    ) {
        let tenure = Tenure::new(7, Instant::now() + Duration::from_millis(80));
        assert!(tenure.is_held() && !tenure.is_lapsed());
        tenure.extend(Instant::now() + Duration::from_millis(200));
        tenure.extend(Instant::now());
        let started = Instant::now();
        tenure.lapsed().await;
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "extended, never shortened"
        );
        assert!(!tenure.is_held() && tenure.is_lapsed());
        assert!(tenure.ended().is_none(), "a lapse does not end the tenure");
        let renewal = {
            let tenure = tenure.clone();
            tokio::spawn(async move { tenure.regained().await })
        };
        tenure.extend(Instant::now() + Duration::from_secs(60));
        assert!(renewal.await.unwrap(), "held again after the renewal");
        assert!(tenure.is_held());
        tenure.end("taken over");
        assert!(!tenure.regained().await);
        tenure.extend(Instant::now() + Duration::from_secs(120));
        assert!(
            !tenure.is_held() && !tenure.is_lapsed(),
            "an ended tenure stays ended"
        );
    }

    #[tokio::test]
    async fn the_first_reason_a_tenure_ended_for_is_kept() {
        let tenure = Tenure::new(1, Instant::now() + Duration::from_secs(60));
        tenure.end("fenced");
        tenure.end("released");
        assert_eq!(tenure.lost().await.as_ref(), "fenced");
        assert_eq!(tenure.ended().as_deref(), Some("fenced"));
    }
}
