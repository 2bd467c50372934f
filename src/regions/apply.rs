//! Writing replicated changes through the router, for the links and the full resync alike.
//!
//! The changes go through the same router path as a client's writes (validated, logged,
//! published to subscribers), as `WriteOp::Replicated`. A collection this region lacks is
//! created with the change's dimension and metric. Shedding, loading and a held-back shard are
//! waited out (the changes must not be lost); changes the engine refuses as invalid (a peer
//! with other limits, or a forged entry) are dropped one by one with a log line and
//! `ruvector_region_rejected_total{peer}`, so one cannot hold back the rest. Changes older than
//! a delete of their whole collection (`drops.rs`) are superseded before anything is written.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use ruvector_actors::version::PointVersion;
use ruvector_actors::{
    CollectionOptions, CreateCollection, DropCollection, EngineError, Lookup, Metric,
    ReplicatedChange, RouteWrite, Router, WriteOp,
};

use super::drops::Drops;

/// Tries of one batch (creating its collection, waiting out shedding) before giving up; the
/// caller reads the same changes again later.
const ATTEMPTS: usize = 40;

/// Where a batch of replicated changes goes.
pub struct Target<'a> {
    pub router: &'a Addr<Router>,
    /// The region the changes came from (metrics and logs).
    pub peer: &'a str,
    pub collection: &'a str,
    pub dimension: usize,
    pub metric: Metric,
    pub drops: &'a Drops,
}

enum Step {
    Done(u64),
    /// Refused as invalid: nothing of the batch was written.
    Invalid(EngineError),
}

impl Target<'_> {
    /// Applies `ops` in order; answers how many took effect (won).
    pub async fn apply(&self, ops: Vec<WriteOp>) -> Result<u64, String> {
        let ops = self.after_drop(ops);
        if ops.is_empty() {
            return Ok(0);
        }
        match self.attempt(ops.clone()).await? {
            Step::Done(n) => Ok(n),
            Step::Invalid(e) if ops.len() == 1 => Ok(self.refuse(1, &e)),
            Step::Invalid(_) => {
                let mut n = 0;
                for op in ops {
                    n += match self.attempt(vec![op]).await? {
                        Step::Done(k) => k,
                        Step::Invalid(e) => self.refuse(1, &e),
                    };
                }
                Ok(n)
            }
        }
    }

    async fn attempt(&self, ops: Vec<WriteOp>) -> Result<Step, String> {
        let mut delay = Duration::from_millis(20);
        for _ in 0..ATTEMPTS {
            let sent = self
                .router
                .send(RouteWrite {
                    collection: self.collection.to_owned(),
                    ops: ops.clone(),
                    create_dimension: None,
                })
                .await
                .map_err(|e| e.to_string())?;
            match sent {
                Ok(outcome) => {
                    return Ok(Step::Done(outcome.iter().filter(|b| **b).count() as u64))
                }
                Err(EngineError::NotFound(_)) => self.create().await?,
                Err(
                    EngineError::Overloaded(_)
                    | EngineError::Unavailable(_)
                    | EngineError::Timeout(_),
                ) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(
                    e @ (EngineError::InvalidArgument(_) | EngineError::DimensionMismatch { .. }),
                ) => return Ok(Step::Invalid(e)),
                Err(
                    e @ (EngineError::AlreadyExists(_)
                    | EngineError::Conflict(_)
                    | EngineError::Internal(_)),
                ) => return Err(format!("collection {:?}: {e}", self.collection)),
            }
        }
        Err(format!(
            "collection {:?} kept refusing replicated writes",
            self.collection
        ))
    }

    async fn create(&self) -> Result<(), String> {
        let created = self
            .router
            .send(CreateCollection {
                name: self.collection.to_owned(),
                options: CollectionOptions {
                    dimension: self.dimension,
                    metric: Some(self.metric),
                    ..Default::default()
                },
            })
            .await
            .map_err(|e| e.to_string())?;
        match created {
            Ok(_) | Err(EngineError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(format!("creating collection {:?}: {e}", self.collection)),
        }
    }

    /// Drops the changes older than the last delete of the whole collection (they lost to it;
    /// they must not re-create it).
    fn after_drop(&self, ops: Vec<WriteOp>) -> Vec<WriteOp> {
        let Some(dropped) = self.drops.dropped_at(self.collection) else {
            return ops;
        };
        let before = ops.len();
        let kept: Vec<WriteOp> = ops
            .into_iter()
            .filter(|op| match op {
                WriteOp::Replicated { version, .. } => version.ts > dropped,
                WriteOp::Upsert { .. } | WriteOp::Delete { .. } | WriteOp::Patch { .. } => true,
            })
            .collect();
        let superseded = (before - kept.len()) as u64;
        if superseded > 0 {
            metrics::counter!("ruvector_region_superseded_total", "peer" => self.peer.to_owned())
                .increment(superseded);
        }
        kept
    }

    /// A delete of the whole collection made at its origin at `version`: remembered (older
    /// changes lose to it from now on), then every point here older than it is deleted with
    /// that version (points written after it, anywhere, stay), and the collection goes when
    /// nothing stays.
    pub async fn apply_drop(&self, version: PointVersion) -> Result<(), String> {
        self.drops
            .record_remote(self.collection, version.ts)
            .map_err(|e| format!("recording a collection delete: {e}"))?;
        let found = self
            .router
            .send(Lookup(self.collection.to_owned()))
            .await
            .map_err(|e| e.to_string())?;
        let collection = match found {
            Ok(c) => c,
            Err(EngineError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(format!("collection {:?}: {e}", self.collection)),
        };
        let version = Arc::new(version);
        let mut cursor: Option<String> = None;
        loop {
            let (page, more) = collection.page(cursor.as_deref(), 512);
            cursor = page.last().map(|(p, _, _)| p.id.clone());
            let ops: Vec<WriteOp> = page
                .into_iter()
                .map(|(p, _, _)| WriteOp::Replicated {
                    id: p.id,
                    change: ReplicatedChange::Delete,
                    version: version.clone(),
                })
                .collect();
            // Not through `apply`: these carry the delete's own time, which its filter drops.
            if !ops.is_empty() {
                self.attempt(ops).await?;
            }
            if !more {
                break;
            }
        }
        if collection.page(None, 1).0.is_empty() {
            let dropped = self
                .router
                .send(DropCollection(self.collection.to_owned()))
                .await
                .map_err(|e| e.to_string())?;
            match dropped {
                Ok(_) | Err(EngineError::NotFound(_)) => {}
                Err(e) => return Err(format!("dropping collection {:?}: {e}", self.collection)),
            }
            tracing::info!(
                peer = self.peer,
                collection = self.collection,
                "collection deleted as its origin region did"
            );
        }
        Ok(())
    }

    fn refuse(&self, n: usize, e: &EngineError) -> u64 {
        metrics::counter!("ruvector_region_rejected_total", "peer" => self.peer.to_owned())
            .increment(n as u64);
        tracing::warn!(peer = self.peer, collection = self.collection, entries = n, error = %e, "replicated writes refused by the engine");
        0
    }
}
