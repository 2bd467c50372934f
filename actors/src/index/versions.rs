//! The version table of a partition: each live point's version and each deleted point's
//! tombstone (the delete's version), for last-write-wins between regions (see `version.rs`).
//!
//! Kept beside the slot table rather than in it: a tombstone must outlive its slot (a rebuild
//! drops dead slots, a late concurrent write must still lose against the delete), and a
//! partition swapped whole after a rebuild keeps the same versions. Tombstones are pruned once
//! their origin time is older than `regions.tombstone_retention_s`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::hnsw::Op;
use crate::version::PointVersion;

/// A point's version and whether it is live (false: a tombstone).
pub type Held = (Arc<PointVersion>, bool);

/// A delete tombstone: the point's id and the delete's version.
pub type Grave = (Arc<str>, Arc<PointVersion>);

#[derive(Debug, Default, Clone)]
pub struct Versions {
    live: HashMap<Arc<str>, Arc<PointVersion>>,
    /// In id order, so a resync can page through them (`graves_after`).
    graves: BTreeMap<Arc<str>, Arc<PointVersion>>,
}

impl Versions {
    /// The version of `id`, live or tombstone.
    pub fn get(&self, id: &str) -> Option<Held> {
        if let Some(v) = self.live.get(id) {
            return Some((v.clone(), true));
        }
        self.graves.get(id).map(|v| (v.clone(), false))
    }

    /// The version of a live point.
    pub fn live(&self, id: &str) -> Option<&Arc<PointVersion>> {
        self.live.get(id)
    }

    /// Records the version an applied op gave its point.
    pub fn record(&mut self, op: &Op, version: Arc<PointVersion>) {
        let id = op.id();
        match op {
            Op::Upsert { .. } | Op::SetMetadata { .. } => {
                self.graves.remove(id);
                match self.live.get_mut(id) {
                    Some(v) => *v = version,
                    None => {
                        self.live.insert(Arc::from(id), version);
                    }
                }
            }
            Op::Delete { .. } => {
                let key = match self.live.remove_entry(id) {
                    Some((k, _)) => k,
                    None => Arc::from(id),
                };
                self.graves.insert(key, version);
            }
        }
    }

    /// Puts back one entry read from a snapshot.
    pub fn restore(&mut self, id: Arc<str>, version: Arc<PointVersion>, live: bool) {
        if live {
            self.live.insert(id, version);
        } else {
            self.graves.insert(id, version);
        }
    }

    /// Drops tombstones whose origin time is before `before_ns`; answers how many.
    pub fn prune_graves(&mut self, before_ns: u64) -> usize {
        let n = self.graves.len();
        self.graves.retain(|_, v| v.ts >= before_ns);
        n - self.graves.len()
    }

    pub fn graves(&self) -> usize {
        self.graves.len()
    }

    /// Up to `limit` tombstones with ids (bytewise) after `after`, in id order.
    pub fn graves_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<(Arc<str>, Arc<PointVersion>)> {
        use std::ops::Bound;
        let from: Bound<&str> = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        self.graves
            .range::<str, _>((from, Bound::Unbounded))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Every entry as (id, version, live), for snapshots.
    pub fn entries(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<PointVersion>, bool)> {
        self.live
            .iter()
            .map(|(k, v)| (k, v, true))
            .chain(self.graves.iter().map(|(k, v)| (k, v, false)))
    }

    pub fn len(&self) -> usize {
        self.live.len() + self.graves.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ts: u64) -> Arc<PointVersion> {
        Arc::new(PointVersion::local(
            None,
            ts,
            &Arc::from("us"),
            &Arc::from("u1"),
        ))
    }

    #[test]
    fn a_delete_leaves_a_tombstone_that_a_later_upsert_replaces_and_pruning_drops() {
        let mut t = Versions::default();
        let up = Op::Upsert {
            id: "a".into(),
            vector: vec![1.0],
            metadata: None,
        };
        t.record(&up, v(1));
        t.record(&Op::Delete { id: "a".into() }, v(2));
        assert_eq!(t.get("a").map(|(v, live)| (v.ts, live)), Some((2, false)));
        assert!(t.live("a").is_none());
        t.record(&up, v(3));
        assert_eq!(t.get("a").map(|(v, live)| (v.ts, live)), Some((3, true)));
        t.record(&Op::Delete { id: "b".into() }, v(4));
        assert_eq!(t.prune_graves(5), 1);
        assert_eq!((t.graves(), t.len()), (0, 1));
    }
}
