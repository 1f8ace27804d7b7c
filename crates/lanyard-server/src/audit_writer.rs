//! Group commit for audit events on the request path.
//!
//! A token exchange must not answer before its audit event is durable, but a
//! database commit per request would cap throughput at the disk's fsync rate.
//! Requests hand their event to one writer task, which takes everything
//! queued (up to [`MAX_BATCH`]) and appends it in one transaction; each
//! request waits for the commit that contains its event. Under load many
//! requests share one commit; when idle a request commits alone at once, so
//! no request waits for a timer.

use std::sync::Arc;

use lanyard_store::{AuditDraft, Store};
use tokio::sync::{mpsc, oneshot};

/// Most events per transaction.
pub const MAX_BATCH: usize = 512;
/// Queue bound: beyond it callers wait (backpressure), never drop events.
const QUEUE: usize = 8192;

type Reply = oneshot::Sender<Result<i64, ()>>;

/// Handle to the writer task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditWriter {
    tx: mpsc::Sender<(AuditDraft, Reply)>,
}

/// The event could not be made durable; the caller must fail closed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("audit event could not be written")]
pub struct AuditUnavailable;

impl AuditWriter {
    /// Starts the writer task on the current runtime.
    pub fn spawn(store: Arc<dyn Store>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, rx));
        Self { tx }
    }

    /// Appends `draft` and waits until it is committed; returns its sequence number.
    ///
    /// # Errors
    /// [`AuditUnavailable`] when the store refused the batch or the writer stopped.
    pub async fn append(&self, draft: AuditDraft) -> Result<i64, AuditUnavailable> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send((draft, reply))
            .await
            .map_err(|_| AuditUnavailable)?;
        wait.await
            .map_err(|_| AuditUnavailable)?
            .map_err(|()| AuditUnavailable)
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<(AuditDraft, Reply)>) {
    let mut batch: Vec<(AuditDraft, Reply)> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let (drafts, replies): (Vec<AuditDraft>, Vec<Reply>) = batch.drain(..).unzip();
        let n = drafts.len();
        match store.append_audit_batch(drafts).await {
            Ok(events) => {
                for (reply, event) in replies.into_iter().zip(events) {
                    let _ = reply.send(Ok(event.seq));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = n, "audit batch failed; the requests are refused");
                for reply in replies {
                    let _ = reply.send(Err(()));
                }
            }
        }
    }
}
