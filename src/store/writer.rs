//! The group-commit writer: one task that takes whatever commits are waiting,
//! writes them in one transaction, and only then answers each caller.
//!
//! Callers enqueue synchronously (the engine does so while it still holds the
//! SKU locks, so the queue order is the order memory changed in) and await
//! their [`Ticket`] after letting the locks go: a hot SKU costs one commit
//! per batch, not per order. Woken by an enqueue, the writer first lets the
//! other tasks that are ready run once, so that callers answered together
//! by the last commit share the next one even when commits are instant.
//!
//! When the store cannot be reached, the writer fails fast: the failed
//! batch's jobs and every job queued behind it are answered at once, the next
//! batch probes the store, and whatever arrives while that probe is under
//! way is refused without waiting for it. The first commit that succeeds
//! ends this.
//!
//! A job may carry the levels its write left (unnumbered, never written as
//! such). The [`Sequencer`] installed on the writer turns the levels of each
//! commit attempt into numbered channel events, written in that attempt's
//! transaction, and hears when it committed: a level is stored and handed
//! on by the commit that acknowledges the write that moved it.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{ChannelEvent, Failure, Op, Store, StoreError};
use crate::domain::{ChannelCode, Sku};

/// Most ops written in one transaction.
const MAX_BATCH_OPS: usize = 4096;

/// One channel's figures for one SKU, without the explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    pub channel: ChannelCode,
    pub atp: i64,
    pub published: i64,
    /// Units of this SKU in the channel's open reservations.
    pub open: i64,
}

/// One SKU's figures for every channel as memory held them when a write
/// was decided (under the SKU's lock, so the queue holds them in the order
/// memory changed): what the [`Sequencer`] numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuLevels {
    pub sku: Sku,
    pub levels: Vec<Level>,
    /// When they were decided: the events' `at_ms`.
    pub at_ms: i64,
}

/// What one commit stored for the channels: the SKUs whose levels it
/// carried and the events they called for, in seq order per channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Published {
    /// The SKUs whose pools changed (their levels were in the commit).
    pub skus: Vec<Sku>,
    /// The level changes this commit stored, in seq order per channel.
    pub events: Vec<ChannelEvent>,
}

/// Numbers channel events inside the writer, so that they are written in
/// the transaction of the writes that moved them. Called only from the
/// writer's task, one commit attempt at a time.
pub trait Sequencer: Send + Sync + 'static {
    /// The events `levels` call for (oldest first; a SKU's last entry is
    /// its newest), numbered after what last committed. Advances nothing:
    /// the attempt may fail.
    fn sequence(&self, levels: &[&SkuLevels]) -> Published;
    /// The attempt that stored `pass` committed: advance, and hand it on.
    fn committed(&self, pass: Published);
    /// The attempt that would store `pass` failed with its outcome unknown:
    /// its seqs may be taken in the store, so they are not numbered again
    /// (a gap if it did not commit). Nothing is handed on; what it would
    /// have told is told again by the next levels of those SKUs.
    fn in_doubt(&self, pass: &Published);
}

/// Where the writer finds the sequencer, installed after it started.
type SequencerSlot = Arc<Mutex<Option<Arc<dyn Sequencer>>>>;

/// A commit that did not happen (or, [`Failure::InDoubt`], may have).
/// Cloneable: one failure answers a whole batch.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{text}")]
pub struct CommitError {
    text: Arc<str>,
    failure: Failure,
}

impl CommitError {
    /// `e` as the callers of a failed commit hear it.
    pub fn new(e: &StoreError) -> Self {
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        CommitError {
            text: text.into(),
            failure: e.failure(),
        }
    }

    /// Nothing was written, and a retry may succeed.
    pub(crate) fn unavailable(text: impl Into<Arc<str>>) -> Self {
        CommitError {
            text: text.into(),
            failure: Failure::Unavailable,
        }
    }

    /// What the failure says about the writes.
    pub fn failure(&self) -> Failure {
        self.failure
    }

    /// This job was not attempted: the store failed with `self` a moment ago.
    /// A deposed server stays deposed, and an isolated one isolated.
    fn not_attempted(&self) -> Self {
        let mut err = CommitError::unavailable(format!(
            "not attempted: the store could not commit a moment ago ({})",
            self.text
        ));
        if matches!(self.failure, Failure::Deposed | Failure::Isolated) {
            err.failure = self.failure;
        }
        err
    }
}

/// A commit that failed so that the writer should fail fast, and when its
/// jobs were answered.
struct Failed {
    err: CommitError,
    answered: Instant,
}

impl Failed {
    fn now(err: CommitError) -> Failed {
        Failed {
            err,
            answered: Instant::now(),
        }
    }
}

/// What the writer asks a job about before writing it, and tells it when it
/// failed. The engine uses it to fail jobs decided on memory that included a
/// change which then failed to commit.
pub trait JobGuard: Send + Sync + 'static {
    /// False when something this job was decided on has since failed.
    fn still_valid(&self) -> bool;
    /// Called by the writer as soon as this job failed, before it looks at
    /// any later job.
    fn failed(&self);
}

struct Job {
    ops: Vec<Op>,
    /// The levels the write left, for the sequencer.
    levels: Vec<SkuLevels>,
    /// When it was queued: a job queued after a failure was answered is
    /// tried, not refused with the jobs that waited for that failure.
    queued: Instant,
    /// Number of ops this job put into the batch.
    len: usize,
    guard: Option<Box<dyn JobGuard>>,
    done: oneshot::Sender<Result<(), CommitError>>,
}

impl Job {
    fn valid(&self) -> bool {
        self.guard.as_ref().is_none_or(|g| g.still_valid())
    }

    fn finish(self, result: Result<(), CommitError>) {
        if result.is_err() {
            if let Some(g) = &self.guard {
                g.failed();
            }
        }
        let _ = self.done.send(result);
    }
}

fn stale() -> CommitError {
    CommitError::unavailable(
        "an earlier write on the same stock failed; this one was decided on it and is not saved",
    )
}

/// The caller's side of one enqueued commit.
#[must_use = "a write is acknowledged only once its ticket resolves"]
pub struct Ticket(oneshot::Receiver<Result<(), CommitError>>);

impl Ticket {
    /// Resolves once the transaction holding this commit has committed (Ok)
    /// or failed (Err, and nothing of it was written).
    pub async fn wait(self) -> Result<(), CommitError> {
        self.0
            .await
            .unwrap_or_else(|_| Err(CommitError::unavailable("the store writer has stopped")))
    }
}

/// Handle to the writer task; dropping every handle lets it drain and stop.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::UnboundedSender<Job>,
    sequencer: SequencerSlot,
}

impl GroupCommit {
    /// Starts the writer over `store`.
    pub fn spawn(store: Arc<dyn Store>) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let sequencer = SequencerSlot::default();
        let task = tokio::spawn(run(store, sequencer.clone(), rx));
        (GroupCommit { tx, sequencer }, task)
    }

    /// Installs the sequencer (replacing an earlier one): from the next
    /// commit attempt on, the levels jobs carry are numbered and stored.
    /// Until then they are dropped.
    pub fn install(&self, sequencer: Arc<dyn Sequencer>) {
        *self.sequencer.lock().unwrap_or_else(|p| p.into_inner()) = Some(sequencer);
    }

    /// Queues `ops` as one atomic unit. Never blocks.
    pub fn enqueue(&self, ops: Vec<Op>) -> Ticket {
        self.send(ops, Vec::new(), None)
    }

    /// Queues `ops` and the `levels` they leave, written only while `guard`
    /// says they are still valid.
    pub fn enqueue_guarded(
        &self,
        ops: Vec<Op>,
        levels: Vec<SkuLevels>,
        guard: Box<dyn JobGuard>,
    ) -> Ticket {
        self.send(ops, levels, Some(guard))
    }

    fn send(
        &self,
        ops: Vec<Op>,
        levels: Vec<SkuLevels>,
        guard: Option<Box<dyn JobGuard>>,
    ) -> Ticket {
        let (done, rx) = oneshot::channel();
        let job = Job {
            queued: Instant::now(),
            len: ops.len(),
            ops,
            levels,
            guard,
            done,
        };
        if let Err(mpsc::error::SendError(job)) = self.tx.send(job) {
            job.finish(Err(CommitError::unavailable(
                "the store writer has stopped",
            )));
        }
        Ticket(rx)
    }
}

async fn run(
    store: Arc<dyn Store>,
    sequencer: SequencerSlot,
    mut rx: mpsc::UnboundedReceiver<Job>,
) {
    let mut ops: Vec<Op> = Vec::new();
    let mut waiting: Vec<Job> = Vec::new();
    // Set while the store cannot be reached: the failure that said so.
    let mut down: Option<CommitError> = None;
    // A job taken from the queue after a failure, to start the next batch.
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => break,
            },
        };
        let mut next = Some(first);
        let mut yielded = false;
        loop {
            while let Some(mut job) = next.take() {
                if job.valid() {
                    ops.append(&mut job.ops);
                    waiting.push(job);
                } else {
                    job.finish(Err(stale()));
                }
                if ops.len() < MAX_BATCH_OPS {
                    next = rx.try_recv().ok();
                }
            }
            if yielded || ops.len() >= MAX_BATCH_OPS {
                break;
            }
            // The enqueue that woke the writer put it first in line, ahead
            // of the callers that are ready to enqueue too: let them, so
            // their jobs share this commit instead of one commit each.
            yielded = true;
            YieldOnce(false).await;
            next = rx.try_recv().ok();
            if next.is_none() {
                break;
            }
        }
        if waiting.is_empty() {
            continue;
        }
        let installed = sequencer.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let installed = installed.as_deref();
        let outcome = match &down {
            None => commit_batch(store.as_ref(), installed, &mut ops, &mut waiting).await,
            Some(failed) => {
                // This batch probes the store; what arrives meanwhile is
                // answered at once rather than queued behind the probe.
                let probe = commit_batch(store.as_ref(), installed, &mut ops, &mut waiting);
                tokio::pin!(probe);
                loop {
                    tokio::select! {
                        biased;
                        outcome = &mut probe => break outcome,
                        Some(job) = rx.recv() => job.finish(Err(failed.not_attempted())),
                    }
                }
            }
        };
        match outcome {
            Ok(asked) => {
                if asked && down.take().is_some() {
                    tracing::info!("the store commits again");
                }
            }
            Err(Failed {
                err: failed,
                answered,
            }) => {
                // Everything queued while the failing commit was tried would
                // only wait for the same failure. What was queued after its
                // jobs heard of it is tried.
                let mut refused = 0usize;
                while let Ok(job) = rx.try_recv() {
                    if job.queued > answered {
                        carried = Some(job);
                        break;
                    }
                    job.finish(Err(failed.not_attempted()));
                    refused += 1;
                }
                if down.is_none() {
                    tracing::warn!(error = %failed, refused, "the store cannot commit: refusing writes at once until a commit succeeds");
                }
                down = Some(failed);
            }
        }
    }
}

/// Lets every task that is ready run before this one goes on: it wakes
/// itself, so the scheduler puts it at the back of the run queue. Not
/// `tokio::task::yield_now`, which hands the waker to the scheduler to be
/// woken only once the worker runs out of tasks, after a poll of the I/O
/// driver: a system call per batch.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Commits the batch and answers its jobs. When the database refused the
/// batch for its content, the jobs are retried one by one (a rolled-back
/// batch wrote nothing), so one bad job cannot fail its neighbours; when
/// the store could not commit at all, every job fails at once, without a
/// retry that would only wait for the same outage. Err: the store could
/// not commit (or may not have), and the writer should fail fast. Ok(false):
/// there was nothing to write (levels that changed nothing), so the store
/// was not asked.
///
/// The channel events the batch's levels call for go last into the same
/// transaction; the sequencer hears of them before any job is answered, so
/// a watcher has a level by the time the write that moved it is
/// acknowledged.
async fn commit_batch(
    store: &dyn Store,
    sequencer: Option<&dyn Sequencer>,
    ops: &mut Vec<Op>,
    waiting: &mut Vec<Job>,
) -> Result<bool, Failed> {
    let jobs = waiting.len();
    let pass = sequencer.and_then(|s| sequence(s, waiting.iter()));
    let with_events = append_events(ops, pass.as_ref());
    if ops.is_empty() {
        if let (Some(s), Some(pass)) = (sequencer, pass) {
            s.committed(pass);
        }
        for job in waiting.drain(..) {
            job.finish(Ok(()));
        }
        return Ok(false);
    }
    let started = std::time::Instant::now();
    let result = store.commit(ops).await;
    crate::telemetry::record_commit(jobs, started.elapsed(), result.is_ok());
    if with_events {
        ops.pop();
    }
    let outcome = match result {
        Ok(()) => {
            if let (Some(s), Some(pass)) = (sequencer, pass) {
                s.committed(pass);
            }
            for job in waiting.drain(..) {
                job.finish(Ok(()));
            }
            Ok(true)
        }
        Err(e) => {
            let err = CommitError::new(&e);
            if let (Failure::InDoubt, Some(s), Some(pass)) = (err.failure(), sequencer, &pass) {
                s.in_doubt(pass);
            }
            if jobs == 1 || err.failure() != Failure::Rejected {
                tracing::error!(error = %err, jobs, "commit failed");
                let answered = Instant::now();
                for job in waiting.drain(..) {
                    job.finish(Err(err.clone()));
                }
                match err.failure() {
                    Failure::Rejected => Ok(true),
                    Failure::Unavailable
                    | Failure::InDoubt
                    | Failure::Deposed
                    | Failure::Isolated => Err(Failed { err, answered }),
                }
            } else {
                tracing::warn!(error = %err, jobs, "the database refused a batch; retrying job by job");
                retry_one_by_one(store, sequencer, ops, waiting)
                    .await
                    .map(|()| true)
            }
        }
    };
    ops.clear();
    outcome
}

/// The levels of `jobs`, numbered; None when they carry none.
fn sequence<'a>(
    sequencer: &dyn Sequencer,
    jobs: impl Iterator<Item = &'a Job>,
) -> Option<Published> {
    let levels: Vec<&SkuLevels> = jobs.flat_map(|j| j.levels.iter()).collect();
    (!levels.is_empty()).then(|| sequencer.sequence(&levels))
}

/// Appends `pass`'s events to `ops`; whether there were any.
fn append_events(ops: &mut Vec<Op>, pass: Option<&Published>) -> bool {
    match pass {
        Some(p) if !p.events.is_empty() => {
            ops.push(Op::ChannelEvents(p.events.clone()));
            true
        }
        _ => false,
    }
}

/// The jobs of a refused batch, each in a transaction of its own (with the
/// channel events of its own levels), in order.
async fn retry_one_by_one(
    store: &dyn Store,
    sequencer: Option<&dyn Sequencer>,
    ops: &mut Vec<Op>,
    waiting: &mut Vec<Job>,
) -> Result<(), Failed> {
    // The ops were moved out of the jobs into `ops`; give each job its own
    // slice back, in order.
    let mut rest = ops.drain(..);
    let mut mine = Vec::with_capacity(waiting.len());
    for job in waiting.iter() {
        mine.push(rest.by_ref().take(job.len).collect::<Vec<Op>>());
    }
    drop(rest);
    let mut down: Option<Failed> = None;
    for (job, mut job_ops) in waiting.drain(..).zip(mine) {
        if !job.valid() {
            job.finish(Err(stale()));
            continue;
        }
        if let Some(failed) = &down {
            job.finish(Err(failed.err.not_attempted()));
            continue;
        }
        let pass = sequencer.and_then(|s| sequence(s, std::iter::once(&job)));
        append_events(&mut job_ops, pass.as_ref());
        let result = if job_ops.is_empty() {
            Ok(())
        } else {
            store
                .commit(&job_ops)
                .await
                .map_err(|e| CommitError::new(&e))
        };
        if let (Some(s), Some(pass)) = (sequencer, pass) {
            match &result {
                Ok(()) => s.committed(pass),
                Err(e) if e.failure() == Failure::InDoubt => s.in_doubt(&pass),
                Err(_) => {}
            }
        }
        if let Err(err) = &result {
            tracing::error!(error = %err, "commit failed");
            if err.failure() != Failure::Rejected {
                down = Some(Failed::now(err.clone()));
            }
        }
        job.finish(result);
    }
    down.map_or(Ok(()), Err)
}
