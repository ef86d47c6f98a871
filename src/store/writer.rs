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

struct Job {
    ops: Vec<Op>,
    done: oneshot::Sender<Result<(), CommitError>>,
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
        let (done, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(job)) = self.tx.send(Job { ops, done }) {
            let _ = job
                .done
                .send(Err(CommitError("the store writer has stopped".into())));
        }
        Ticket(rx)
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut ops: Vec<Op> = Vec::new();
    let mut waiting: Vec<(usize, oneshot::Sender<Result<(), CommitError>>)> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut job = Some(first);
        while let Some(j) = job.take() {
            waiting.push((j.ops.len(), j.done));
            ops.extend(j.ops);
            if ops.len() < MAX_BATCH_OPS {
                job = rx.try_recv().ok();
            }
        }
        commit_batch(store.as_ref(), &mut ops, &mut waiting).await;
    }
}

async fn commit_batch(
    store: &dyn Store,
    ops: &mut Vec<Op>,
    waiting: &mut Vec<(usize, oneshot::Sender<Result<(), CommitError>>)>,
) {
    let jobs = waiting.len();
    let started = std::time::Instant::now();
    let result = store.commit(ops).await;
    crate::telemetry::record_commit(jobs, started.elapsed(), result.is_ok());
    match result {
        Ok(()) => {
            for (_, done) in waiting.drain(..) {
                let _ = done.send(Ok(()));
            }
        }
        Err(e) if jobs == 1 => {
            let err = CommitError::new(&e);
            tracing::error!(error = %err, "commit failed");
            for (_, done) in waiting.drain(..) {
                let _ = done.send(Err(err.clone()));
            }
        }
        Err(e) => {
            // Nothing of the batch was written. Commit each job alone so that
            // one bad job cannot fail its neighbours.
            tracing::warn!(error = %CommitError::new(&e), jobs, "batch commit failed; retrying job by job");
            let mut start = 0;
            for (len, done) in waiting.drain(..) {
                let mine = &ops[start..start + len];
                start += len;
                let result = store.commit(mine).await.map_err(|e| CommitError::new(&e));
                if let Err(err) = &result {
                    tracing::error!(error = %err, "commit failed");
                }
                let _ = done.send(result);
            }
        }
    }
    ops.clear();
}
