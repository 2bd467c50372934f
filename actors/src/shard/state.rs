//! `ShardState`: what a shard's actor, its writer thread and the router share — the current
//! partition (swapped whole after a rebuild), the last applied sequence number, the discard flag
//! of a collection being deleted, and the hub applied writes are published to.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::hub::Hub;
use crate::index::hnsw::Partition;

/// What the actor, its writer thread and the router share.
pub struct ShardState {
    pub collection: Arc<str>,
    pub shard: usize,
    partition: RwLock<Arc<Partition>>,
    seq: AtomicU64,
    /// Set when the collection is being deleted: no final snapshot.
    discarded: AtomicBool,
    /// Where applied writes are published (subscriptions, replay window).
    pub hub: Arc<Hub>,
}

impl ShardState {
    pub fn new(
        collection: Arc<str>,
        shard: usize,
        partition: Partition,
        seq: u64,
        hub: Arc<Hub>,
    ) -> ShardState {
        ShardState {
            collection,
            shard,
            partition: RwLock::new(Arc::new(partition)),
            seq: AtomicU64::new(seq),
            discarded: AtomicBool::new(false),
            hub,
        }
    }

    /// The current partition. Searches keep the `Arc` they took even if a rebuild swaps it.
    pub fn partition(&self) -> Arc<Partition> {
        self.partition.read().clone()
    }

    pub(super) fn swap_partition(&self, p: Arc<Partition>) {
        *self.partition.write() = p;
    }

    /// Marks the shard's data as about to be deleted.
    pub fn discard(&self) {
        self.discarded.store(true, Ordering::Release);
    }

    pub(super) fn is_discarded(&self) -> bool {
        self.discarded.load(Ordering::Acquire)
    }

    /// Sequence number of the last applied write.
    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    pub(super) fn set_seq(&self, s: u64) {
        self.seq.store(s, Ordering::Release);
    }

    /// `ruvector_shard_unindexed{collection,shard}`: points acknowledged, not yet linked.
    pub(super) fn publish_unindexed(&self, n: usize) {
        let labels = [
            ("collection", self.collection.to_string()),
            ("shard", self.shard.to_string()),
        ];
        metrics::gauge!("ruvector_shard_unindexed", &labels).set(n as f64);
    }

    pub(super) fn publish_gauges(&self) {
        let p = self.partition();
        let t = p.table();
        let labels = [
            ("collection", self.collection.to_string()),
            ("shard", self.shard.to_string()),
        ];
        metrics::gauge!("ruvector_shard_points", &labels).set(t.live() as f64);
        metrics::gauge!("ruvector_shard_tombstones", &labels).set(t.dead() as f64);
    }
}
