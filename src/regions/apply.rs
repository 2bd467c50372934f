//! Writing replicated changes through the router, for the links and the full resync alike.
//!
//! The changes go through the same router path as a client's writes (validated, logged,
//! published to subscribers), as `WriteOp::Replicated`. A collection this region lacks is
//! created with the change's dimension and metric. Shedding, loading and a held-back shard are
//! waited out (the changes must not be lost); changes the engine refuses as invalid (a peer
//! with other limits, or a forged entry) are dropped one by one with a log line and
//! `ruvector_region_rejected_total{peer}`, so one cannot hold back the rest.

use std::time::Duration;

use actix::Addr;
use ruvector_actors::{
    CollectionOptions, CreateCollection, EngineError, Metric, RouteWrite, Router, WriteOp,
};

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
}

enum Step {
    Done(u64),
    /// Refused as invalid: nothing of the batch was written.
    Invalid(EngineError),
}

impl Target<'_> {
    /// Applies `ops` in order; answers how many took effect (won).
    pub async fn apply(&self, ops: Vec<WriteOp>) -> Result<u64, String> {
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

    fn refuse(&self, n: usize, e: &EngineError) -> u64 {
        metrics::counter!("ruvector_region_rejected_total", "peer" => self.peer.to_owned())
            .increment(n as u64);
        tracing::warn!(peer = self.peer, collection = self.collection, entries = n, error = %e, "replicated writes refused by the engine");
        0
    }
}
