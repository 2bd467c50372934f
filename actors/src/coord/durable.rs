//! Group commit for a coordinator. With `storage.fsync = "batch"` a change is written to the log
//! and applied at once, but nothing that depends on it leaves the actor before the log is synced:
//! replies, topic messages to subscribers and removals of memory points wait in `after_sync`,
//! and one sync (`Flush`, queued behind the requests already in the mailbox) releases them all.
//! So many requests share one fsync, and no client ever sees a change a crash could take back.
//!
//! A sync that fails leaves the state in memory ahead of the disk: every waiting reply is
//! refused and the coordinator stops, to be loaded again from its log by the next request. With
//! `"always"` every change is synced as it is written (nothing waits); with `"never"` the OS
//! decides (nothing waits either).

use actix::prelude::*;

use super::actor::{Coordinator, Waiting};
use super::ops::Reply;
use super::store::Change;
use crate::error::{EngineError, Result};

/// Sync the log and release what waits for it.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Flush;

impl Coordinator {
    /// Writes `changes` to the log, then applies them (durable at the next sync).
    pub(super) fn commit(&mut self, changes: Vec<Change>) -> Result<()> {
        self.store.commit(&changes)?;
        for c in changes {
            self.state.apply(c, self.cfg.topic_history);
        }
        if !self.store.unsynced() {
            self.maybe_snapshot();
        }
        Ok(())
    }

    fn maybe_snapshot(&mut self) {
        if self.store.since_snapshot() >= self.cfg.snapshot_every_ops {
            if let Err(e) = self.store.snapshot(&self.state) {
                tracing::error!(error = %e, "coordination snapshot failed; the log still holds everything");
            }
        }
    }

    /// Runs `then` once everything written so far is durable (at once when it is).
    pub(super) fn after_sync(
        &mut self,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Coordinator, &mut Context<Coordinator>) + Send + 'static,
    ) {
        if self.store.unsynced() {
            self.waiting.push(Waiting::Run(Box::new(then)));
            self.schedule_flush(ctx);
        } else {
            then(self, ctx);
        }
    }

    /// The answer to a request: now, or once the changes before it are durable.
    pub(super) fn answer(
        &mut self,
        result: Result<Reply>,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<Reply>> {
        if !self.store.unsynced() {
            return Box::pin(fut::ready(result));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiting.push(Waiting::Reply(tx, result));
        self.schedule_flush(ctx);
        Box::pin(
            async move {
                rx.await.unwrap_or_else(|_| {
                    Err(EngineError::Internal("the coordinator stopped".into()))
                })
            }
            .into_actor(self),
        )
    }

    pub(super) fn schedule_flush(&mut self, ctx: &mut Context<Self>) {
        if !self.flush_queued {
            self.flush_queued = true;
            // Handled after the requests already waiting in the mailbox: they share the sync.
            ctx.notify(Flush);
        }
    }

    /// Syncs the log and releases what waited for it. On failure the coordinator stops.
    pub(super) fn flush(&mut self, ctx: &mut Context<Self>) -> Result<()> {
        let synced = self.store.sync();
        let waiting = std::mem::take(&mut self.waiting);
        match &synced {
            Ok(()) => {
                metrics::histogram!("ruvector_coordination_group_size")
                    .record(waiting.len() as f64);
                for w in waiting {
                    match w {
                        Waiting::Reply(tx, r) => {
                            let _ = tx.send(r);
                        }
                        Waiting::Run(then) => then(self, ctx),
                    }
                }
                self.maybe_snapshot();
            }
            Err(e) => {
                tracing::error!(error = %e, "coordination log sync failed: refusing the waiting requests and reloading the tenant's state from its log");
                for w in waiting {
                    if let Waiting::Reply(tx, _) = w {
                        let _ = tx.send(Err(e.clone()));
                    }
                }
                self.failed = true;
                ctx.stop();
            }
        }
        synced
    }
}

impl Handler<Flush> for Coordinator {
    type Result = ();

    fn handle(&mut self, _: Flush, ctx: &mut Self::Context) {
        self.flush_queued = false;
        let _ = self.flush(ctx);
    }
}
