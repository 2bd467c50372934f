//! Turning a batch of write requests into log records: what each op does to its point (a delete
//! or patch of a missing point does nothing), the version each record gives its point, and, for
//! writes replicated from another region or instance, whether they win (last-write-wins, see
//! `version.rs`).
//!
//! Kept apart from the writer's commit path because it is pure: it reads the partition and the
//! version table as they are and tracks what the batch itself changes in overlays, so the
//! batch's decisions are those a one-at-a-time application would take.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::WriteOrigin;
use crate::index::hnsw::{Op, Partition};
use crate::index::versions::{Held, Versions};
use crate::types::{apply_patch, Metadata};
use crate::version::{Causality, PointVersion};

/// A write as a client asks for it, or as a region link delivers it.
#[derive(Debug, Clone)]
pub enum WriteOp {
    Upsert {
        id: String,
        vector: Vec<f32>,
        metadata: Option<Metadata>,
    },
    Delete {
        id: String,
    },
    /// Merge keys into the metadata; a `null` value removes the key.
    Patch {
        id: String,
        patch: Metadata,
    },
    /// A write made elsewhere, with the version it gave its point there: applied only if that
    /// version wins over the point's (or tombstone's) here.
    Replicated {
        id: String,
        change: ReplicatedChange,
        version: Arc<PointVersion>,
    },
}

impl WriteOp {
    pub fn id(&self) -> &str {
        match self {
            WriteOp::Upsert { id, .. }
            | WriteOp::Delete { id }
            | WriteOp::Patch { id, .. }
            | WriteOp::Replicated { id, .. } => id,
        }
    }
}

/// What a replicated write did to its point where it was made.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicatedChange {
    /// The point's whole state after the write (an upsert, or a patch with the vector it had).
    Upsert {
        vector: Vec<f32>,
        metadata: Option<Metadata>,
    },
    Delete,
    /// A metadata change whose vector the origin no longer had: applied to a live point only.
    Metadata {
        metadata: Option<Metadata>,
    },
}

/// A batch resolved into records (sequence numbers from `first_seq`), each with the version it
/// gives its point, and per op whether it took effect.
pub struct Resolved {
    pub records: Vec<(u64, Op)>,
    pub versions: Vec<Option<Arc<PointVersion>>>,
    pub outcomes: Vec<Vec<bool>>,
}

type MetaState = Option<Option<Arc<Metadata>>>;

struct Batch<'a> {
    partition: &'a Partition,
    versions: &'a Versions,
    region: Option<(Arc<str>, Arc<str>)>,
    now: u64,
    /// The version every point new to this batch gets (one allocation for a batch of inserts).
    fresh: Option<Arc<PointVersion>>,
    /// Existence and metadata as this batch changes them.
    meta: HashMap<String, MetaState>,
    held: HashMap<String, Option<Held>>,
    /// The highest version time this batch gave (the writer's clock moves past it).
    max_ts: u64,
}

impl Batch<'_> {
    fn current(&self, id: &str) -> MetaState {
        match self.meta.get(id) {
            Some(state) => state.clone(),
            None => self.partition.metadata_of(id),
        }
    }

    fn held(&self, id: &str) -> Option<Held> {
        match self.held.get(id) {
            Some(h) => h.clone(),
            None => self.versions.get(id),
        }
    }

    /// The version a local write gives `id` (none when this server stamps nothing).
    fn local_version(&mut self, id: &str) -> Option<Arc<PointVersion>> {
        let (region, instance) = self.region.as_ref()?;
        let v = match self.held(id) {
            Some((prior, _)) => Arc::new(PointVersion::local(
                Some(&prior),
                self.now,
                region,
                instance,
            )),
            None => self
                .fresh
                .get_or_insert_with(|| {
                    Arc::new(PointVersion::local(None, self.now, region, instance))
                })
                .clone(),
        };
        self.max_ts = self.max_ts.max(v.ts);
        Some(v)
    }

    fn set(&mut self, id: &str, meta: MetaState, version: &Option<Arc<PointVersion>>) {
        self.meta.insert(id.to_owned(), meta.clone());
        if let Some(v) = version {
            self.held
                .insert(id.to_owned(), Some((v.clone(), meta.is_some())));
        }
    }

    /// The record a client's op makes, if it changes anything.
    fn local(&mut self, op: WriteOp) -> Option<(Op, Option<Arc<PointVersion>>)> {
        let op = match op {
            WriteOp::Upsert {
                id,
                vector,
                metadata,
            } => Op::Upsert {
                id,
                vector,
                metadata: metadata.map(Arc::new),
            },
            WriteOp::Delete { id } => {
                self.current(&id)?;
                Op::Delete { id }
            }
            WriteOp::Patch { id, patch } => {
                let existing = self.current(&id)?;
                let mut merged = existing.as_deref().cloned().unwrap_or_default();
                apply_patch(&mut merged, &patch);
                Op::SetMetadata {
                    id,
                    metadata: Some(Arc::new(merged)),
                }
            }
            WriteOp::Replicated { .. } => return None,
        };
        let version = self.local_version(op.id());
        Some((op, version))
    }

    /// The record a replicated write makes, if it wins.
    fn replicated(
        &mut self,
        id: String,
        change: ReplicatedChange,
        version: Arc<PointVersion>,
    ) -> Option<Op> {
        if let Some((current, _)) = self.held(&id) {
            let relation = version.causality(&current);
            if relation == Causality::Concurrent {
                metrics::counter!("ruvector_region_conflicts_total", "peer" => version.region.to_string())
                    .increment(1);
            }
            if !version.wins_over(&current) {
                metrics::counter!("ruvector_region_superseded_total", "peer" => version.region.to_string())
                    .increment(1);
                return None;
            }
        }
        let op = match change {
            ReplicatedChange::Upsert { vector, metadata } => Op::Upsert {
                id,
                vector,
                metadata: metadata.map(Arc::new),
            },
            // Also when the point is missing here: the tombstone must stay to beat older writes.
            ReplicatedChange::Delete => Op::Delete { id },
            ReplicatedChange::Metadata { metadata } => {
                self.current(&id)?;
                Op::SetMetadata {
                    id,
                    metadata: metadata.map(Arc::new),
                }
            }
        };
        self.max_ts = self.max_ts.max(version.ts);
        Some(op)
    }
}

/// Resolves `jobs` (each a request's ops, taken) against the partition and version table.
/// `now` is the batch's clock (already above every earlier stamp of this shard).
pub fn resolve(
    partition: &Partition,
    versions: &Versions,
    origin: &WriteOrigin,
    now: u64,
    first_seq: u64,
    jobs: Vec<Vec<WriteOp>>,
) -> (Resolved, u64) {
    let mut b = Batch {
        partition,
        versions,
        region: (!origin.region.is_empty()).then(|| {
            (
                Arc::from(origin.region.as_str()),
                Arc::from(origin.instance.as_str()),
            )
        }),
        now,
        fresh: None,
        meta: HashMap::new(),
        held: HashMap::new(),
        max_ts: now,
    };
    let mut seq = first_seq;
    let mut out = Resolved {
        records: Vec::new(),
        versions: Vec::new(),
        outcomes: Vec::with_capacity(jobs.len()),
    };
    for ops in jobs {
        let mut outcome = Vec::with_capacity(ops.len());
        // The ops are moved, not cloned: a point's metadata exists once, shared by the record,
        // the slot and the hub's change.
        for op in ops {
            let made = match op {
                WriteOp::Replicated {
                    id,
                    change,
                    version,
                } => b
                    .replicated(id, change, version.clone())
                    .map(|op| (op, Some(version))),
                op @ (WriteOp::Upsert { .. } | WriteOp::Delete { .. } | WriteOp::Patch { .. }) => {
                    b.local(op)
                }
            };
            outcome.push(made.is_some());
            if let Some((op, version)) = made {
                let meta = match &op {
                    Op::Upsert { metadata, .. } | Op::SetMetadata { metadata, .. } => {
                        Some(metadata.clone())
                    }
                    Op::Delete { .. } => None,
                };
                let id = op.id().to_owned();
                b.set(&id, meta, &version);
                out.records.push((seq, op));
                out.versions.push(version);
                seq += 1;
            }
        }
        out.outcomes.push(outcome);
    }
    (out, b.max_ts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::hnsw::PartitionSpec;
    use crate::types::{HnswParams, Metric};

    fn partition() -> Partition {
        Partition::new(PartitionSpec {
            metric: Metric::L2,
            dimension: 2,
            hnsw: HnswParams {
                m: 8,
                ef_construction: 32,
                ef_search: 16,
                quantization: Default::default(),
            },
        })
    }

    fn origin(region: &str) -> WriteOrigin {
        WriteOrigin {
            region: region.into(),
            instance: format!("{region}-1"),
            ..Default::default()
        }
    }

    fn remote(ts: u64, region: &str, change: ReplicatedChange) -> WriteOp {
        WriteOp::Replicated {
            id: "p".into(),
            change,
            version: Arc::new(PointVersion::local(
                None,
                ts,
                &Arc::from(region),
                &Arc::from(format!("{region}-1").as_str()),
            )),
        }
    }

    fn upsert(x: f32) -> ReplicatedChange {
        ReplicatedChange::Upsert {
            vector: vec![x, 0.0],
            metadata: None,
        }
    }

    /// Applies one batch the way the writer does; answers the per-op outcomes.
    fn run(
        p: &Partition,
        v: &mut Versions,
        o: &WriteOrigin,
        now: u64,
        ops: Vec<WriteOp>,
    ) -> Vec<bool> {
        let (r, _) = resolve(p, v, o, now, 1, vec![ops]);
        p.apply(&r.records);
        for ((_, op), ver) in r.records.iter().zip(r.versions) {
            if let Some(ver) = ver {
                v.record(op, ver);
            }
        }
        r.outcomes.into_iter().flatten().collect()
    }

    #[test]
    fn the_later_stamp_wins_in_either_order_and_a_delete_tombstone_beats_older_writes() {
        let us = origin("us");
        // Two orders of the same three writes end in the same state.
        for order in [[0usize, 1, 2], [2, 1, 0]] {
            let (p, mut v) = (partition(), Versions::default());
            let writes = [
                remote(10, "eu", upsert(1.0)),
                remote(30, "ap", ReplicatedChange::Delete),
                remote(20, "eu", upsert(2.0)),
            ];
            for i in order {
                run(&p, &mut v, &us, 1, vec![writes[i].clone()]);
            }
            assert!(p.get("p").is_none(), "the delete at 30 wins");
            let (held, live) = v.get("p").unwrap();
            assert_eq!((held.ts, live), (30, false));
        }
    }

    #[test]
    fn a_stale_delivery_is_ignored_and_a_local_write_after_a_remote_one_wins() {
        let us = origin("us");
        let (p, mut v) = (partition(), Versions::default());
        assert_eq!(
            run(&p, &mut v, &us, 1, vec![remote(50, "eu", upsert(1.0))]),
            vec![true]
        );
        assert_eq!(
            run(&p, &mut v, &us, 1, vec![remote(40, "eu", upsert(9.0))]),
            vec![false]
        );
        assert_eq!(p.get("p").unwrap().vector, vec![1.0, 0.0]);
        // This server's clock (now = 5) is behind the remote write: its write still orders after.
        let local = WriteOp::Upsert {
            id: "p".into(),
            vector: vec![3.0, 0.0],
            metadata: None,
        };
        assert_eq!(run(&p, &mut v, &us, 5, vec![local]), vec![true]);
        let (held, _) = v.get("p").unwrap();
        assert_eq!(held.ts, 51);
        assert_eq!(held.vv.len(), 2, "{held:?}");
    }
}
