//! The group-commit writer: one task that takes whatever commits are waiting,
//! writes them in one transaction, and only then answers each caller.
//!
//! Callers enqueue synchronously (the engine does so while it still holds the
//! SKU locks, so the queue order is the order memory changed in) and await
//! their [`Ticket`] after letting the locks go: a hot SKU costs one commit
//! per batch, not per order.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Op, Store};

/// Most ops written in one transaction.
const MAX_BATCH_OPS: usize = 4096;

/// A commit that did not happen. Cloneable: one failure answers a whole batch.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CommitError(Arc<str>);

impl CommitError {
    fn new(e: &(dyn std::error::Error + 'static)) -> Self {
        let mut text = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        CommitError(text.into())
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
    CommitError(
        "an earlier write on the same stock failed; this one was decided on it and is not saved"
            .into(),
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
            .unwrap_or_else(|_| Err(CommitError("the store writer has stopped".into())))
    }
}

/// Handle to the writer task; dropping every handle lets it drain and stop.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::UnboundedSender<Job>,
}

impl GroupCommit {
    /// Starts the writer over `store`.
    pub fn spawn(store: Arc<dyn Store>) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(store, rx));
        (GroupCommit { tx }, task)
    }

    /// Queues `ops` as one atomic unit. Never blocks.
    pub fn enqueue(&self, ops: Vec<Op>) -> Ticket {
        self.send(ops, None)
    }

    /// Queues `ops`, written only while `guard` says they are still valid.
    pub fn enqueue_guarded(&self, ops: Vec<Op>, guard: Box<dyn JobGuard>) -> Ticket {
        self.send(ops, Some(guard))
    }

    fn send(&self, ops: Vec<Op>, guard: Option<Box<dyn JobGuard>>) -> Ticket {
        let (done, rx) = oneshot::channel();
        let job = Job {
            len: ops.len(),
            ops,
            guard,
            done,
        };
        if let Err(mpsc::error::SendError(job)) = self.tx.send(job) {
            job.finish(Err(CommitError("the store writer has stopped".into())));
        }
        Ticket(rx)
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut ops: Vec<Op> = Vec::new();
    let mut waiting: Vec<Job> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
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
        if !waiting.is_empty() {
            commit_batch(store.as_ref(), &mut ops, &mut waiting).await;
        }
    }
}

/// Commits the batch; on failure, retries job by job (a rolled-back batch
/// wrote nothing) so one bad job cannot fail its neighbours, skipping jobs
/// that the failure made stale.
async fn commit_batch(store: &dyn Store, ops: &mut Vec<Op>, waiting: &mut Vec<Job>) {
    let jobs = waiting.len();
    let started = std::time::Instant::now();
    let result = store.commit(ops).await;
    crate::telemetry::record_commit(jobs, started.elapsed(), result.is_ok());
    match result {
        Ok(()) => {
            for job in waiting.drain(..) {
                job.finish(Ok(()));
            }
        }
        Err(e) => {
            let err = CommitError::new(&e);
            if jobs == 1 {
                tracing::error!(error = %err, "commit failed");
                for job in waiting.drain(..) {
                    job.finish(Err(err.clone()));
                }
            } else {
                tracing::warn!(error = %err, jobs, "batch commit failed; retrying job by job");
                // The ops were moved out of the jobs into `ops`; give each
                // job its own slice back, in order.
                let mut rest = ops.drain(..);
                let mut mine = Vec::with_capacity(jobs);
                for job in waiting.iter() {
                    mine.push(rest.by_ref().take(job.len).collect::<Vec<Op>>());
                }
                drop(rest);
                for (job, job_ops) in waiting.drain(..).zip(mine) {
                    if !job.valid() {
                        job.finish(Err(stale()));
                        continue;
                    }
                    let result = store
                        .commit(&job_ops)
                        .await
                        .map_err(|e| CommitError::new(&e));
                    if let Err(err) = &result {
                        tracing::error!(error = %err, "commit failed");
                    }
                    job.finish(result);
                }
            }
        }
    }
    ops.clear();
}
