//! `ShardState`: what a shard's actor, its writer thread and the router share — the current
//! partition (swapped whole after a rebuild), its points' versions, the last applied sequence
//! number, how far the change log has been published (the log is kept from there), the discard
//! flag of a collection being deleted, and the hub applied writes are published to.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::hub::Hub;
use crate::index::hnsw::Partition;
use crate::index::versions::Versions;

/// What the actor, its writer thread and the router share.
pub struct ShardState {
    pub collection: Arc<str>,
    pub shard: usize,
    /// The shard's directory (its log is read there by the change-log publisher).
    pub dir: std::path::PathBuf,
    /// Random, made once with the shard's directory: names this shard's log in the change log
    /// (a collection deleted and re-created gets new ones, its sequence numbers start again).
    pub log_id: Arc<str>,
    partition: RwLock<Arc<Partition>>,
    /// Each point's version and the tombstones of deleted ones (the writer alone changes it).
    versions: RwLock<Versions>,
    seq: AtomicU64,
    /// The last sequence number the change log holds (`u64::MAX`: nothing to publish); log
    /// segments after it are kept.
    published: AtomicU64,
    /// Set when the collection is being deleted: no final snapshot.
    discarded: AtomicBool,
    /// Where applied writes are published (subscriptions, replay window).
    pub hub: Arc<Hub>,
}

impl ShardState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        collection: Arc<str>,
        shard: usize,
        dir: std::path::PathBuf,
        log_id: Arc<str>,
        partition: Partition,
        versions: Versions,
        seq: u64,
        hub: Arc<Hub>,
        publish: bool,
    ) -> ShardState {
        ShardState {
            collection,
            shard,
            dir,
            log_id,
            partition: RwLock::new(Arc::new(partition)),
            versions: RwLock::new(versions),
            seq: AtomicU64::new(seq),
            published: AtomicU64::new(if publish { 0 } else { u64::MAX }),
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

    /// Each point's version (read: scroll pages; the writer alone writes).
    pub fn versions(&self) -> parking_lot::RwLockReadGuard<'_, Versions> {
        self.versions.read()
    }

    pub(super) fn versions_mut(&self) -> parking_lot::RwLockWriteGuard<'_, Versions> {
        self.versions.write()
    }

    pub(super) fn replace_versions(&self, v: Versions) {
        *self.versions.write() = v;
    }

    /// The last sequence number published to the change log (`u64::MAX`: no publishing).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Acquire)
    }

    /// Called by the change-log publisher once Redis holds every record up to `seq`.
    pub fn set_published(&self, seq: u64) {
        self.published.store(seq, Ordering::Release);
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
        // Deletes remembered for replication (pruned after regions.tombstone_retention_s); read
        // before the slot table's lock is taken, never while holding it.
        let graves = self.versions().graves();
        let p = self.partition();
        let t = p.table();
        let labels = [
            ("collection", self.collection.to_string()),
            ("shard", self.shard.to_string()),
        ];
        metrics::gauge!("ruvector_shard_points", &labels).set(t.live() as f64);
        metrics::gauge!("ruvector_shard_tombstones", &labels).set(t.dead() as f64);
        metrics::gauge!("ruvector_shard_delete_tombstones", &labels).set(graves as f64);
    }
}
