//! The shard's writer thread: the only mutator of its partition and log.
//!
//! It takes write jobs from a bounded queue, appends all that arrived together to the log, makes
//! them durable with one fsync (group commit), applies them to the partition, then acknowledges.
//! Between batches it takes snapshots and starts/finishes background rebuilds. Searches never
//! wait for it: they read the partition under its read lock on the search pool.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use tokio::sync::oneshot;

use super::load;
use super::resolve::{resolve, WriteOp};
use super::state::ShardState;
use crate::config::IndexConfig;
use crate::config::StorageConfig;
use crate::config::WriteOrigin;
use crate::error::{EngineError, Result};
use crate::hub::{Change, ChangeOp};
use crate::index::hnsw::{Op, Partition};
use crate::pool::QueueWait;
use crate::storage::wal::{ReplayMode, WriteLog};
use crate::storage::{snapshot, FsyncMode};
use crate::types::Metadata;
use crate::version::PointVersion;

/// Per op: whether its target existed (delete and patch of a missing point do nothing).
pub type WriteOutcome = Vec<bool>;

pub struct WriteJob {
    pub ops: Vec<WriteOp>,
    pub reply: oneshot::Sender<Result<WriteOutcome>>,
    /// When it entered the writer's queue (its wait is a shed signal)…
    pub enqueued: Instant,
    /// …if other requests' writes were queued ahead of it.
    pub behind_others: bool,
}

/// The hub's view of a batch, taken before it is applied (a delete reports what the point
/// held; a metadata patch reports the point's vector). Metadata is shared, never copied.
fn changes_of(partition: &Partition, records: &[(u64, Op)]) -> Vec<Change> {
    type Held = (Arc<[f32]>, Option<Arc<Metadata>>);
    let mut batch: HashMap<&str, Held> = HashMap::new();
    let stored = |id: &str, batch: &HashMap<&str, Held>| -> Option<Held> {
        match batch.get(id) {
            Some(h) => Some(h.clone()),
            None => {
                let metadata = partition.metadata_of(id)?;
                let vector = partition.get_vector(id)?;
                Some((Arc::from(vector), metadata))
            }
        }
    };
    let mut out = Vec::with_capacity(records.len());
    for (_, op) in records {
        match op {
            Op::Upsert {
                id,
                vector,
                metadata,
            } => {
                let v: Arc<[f32]> = Arc::from(vector.as_slice());
                batch.insert(id, (v.clone(), metadata.clone()));
                out.push(Change {
                    op: ChangeOp::Upsert,
                    id: Arc::from(id.as_str()),
                    vector: Some(v),
                    metadata: metadata.clone(),
                });
            }
            Op::SetMetadata { id, metadata } => {
                let vector = stored(id, &batch).map(|(v, _)| v);
                if let Some(v) = &vector {
                    batch.insert(id, (v.clone(), metadata.clone()));
                }
                out.push(Change {
                    op: ChangeOp::Upsert,
                    id: Arc::from(id.as_str()),
                    vector,
                    metadata: metadata.clone(),
                });
            }
            Op::Delete { id } => {
                let old = stored(id, &batch);
                batch.remove(id.as_str());
                let (vector, metadata) = match old {
                    Some((v, m)) => (Some(v), m),
                    None => (None, None),
                };
                out.push(Change {
                    op: ChangeOp::Delete,
                    id: Arc::from(id.as_str()),
                    vector,
                    metadata,
                });
            }
        }
    }
    out
}

/// Messages from the writer's helper threads.
struct Rebuilt(Partition);

pub(super) struct Writer {
    pub dir: PathBuf,
    pub state: Arc<ShardState>,
    pub storage: StorageConfig,
    pub index: IndexConfig,
    pub log: WriteLog,
    pub rx: Receiver<WriteJob>,
    pub last_snapshot: Instant,
    pub ops_since_snapshot: u64,
    /// The newest verified snapshot: kept, with the log after it, until a newer one is written
    /// and verified, so a damaged newest snapshot can fall back to it without losing writes.
    pub kept_snapshot: Option<u64>,
    /// Set when the partition could not be rebuilt from disk after a failure: every write is
    /// refused with `unavailable` naming the reason, instead of running on a suspect partition.
    pub failed: Option<String>,
    /// Where the time jobs waited in this writer's queue is recorded.
    pub queue_wait: Arc<QueueWait>,
    /// This server's region and instance, stamped on every logged write.
    pub origin: WriteOrigin,
    /// The last stamp's time (ns): stamps of one shard strictly increase even if the clock
    /// steps back.
    pub last_stamp_ns: u64,
    /// When tombstones were last pruned.
    pub last_prune: Instant,
}

struct Rebuild {
    done: Receiver<Rebuilt>,
    backlog: Vec<(u64, Op)>,
}

/// How often expired tombstones are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How long the writer sleeps when idle before it looks at snapshots and rebuilds again.
const IDLE_TICK: Duration = Duration::from_millis(500);
/// A rebuild whose backlog of concurrent writes grows past this is abandoned (and retried).
const MAX_REBUILD_BACKLOG: usize = 1_000_000;
/// Points linked per turn of the writer between batches: at the measured 4-7k points/s with
/// two threads, a write waits at most ~0.2 s behind a turn.
const LINK_CHUNK: usize = 1024;

impl Writer {
    pub fn run(mut self) {
        let mut rebuild: Option<Rebuild> = None;
        // A tail replayed at start waits to be linked: say so before the first chunk.
        self.state
            .publish_unindexed(self.state.partition().unindexed());
        loop {
            // Points waiting to be linked (a tail replayed at start): link them when idle.
            let tick = if self.state.partition().unindexed() > 0 {
                Duration::ZERO
            } else {
                IDLE_TICK
            };
            let first = match self.rx.recv_timeout(tick) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    if catch_unwind(AssertUnwindSafe(|| self.maintain(&mut rebuild))).is_err() {
                        self.recover("maintenance panicked", &mut rebuild);
                    }
                    // A tail replayed at start is linked here, with nothing else to do.
                    if catch_unwind(AssertUnwindSafe(|| self.link_backlog())).is_err() {
                        self.recover("linking into the graph panicked", &mut rebuild);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let batch = self.gather(first);
            let now = Instant::now();
            for job in &batch {
                self.queue_wait
                    .record(now.duration_since(job.enqueued), job.behind_others);
            }
            if let Some(reason) = &self.failed {
                for job in batch {
                    let _ = job
                        .reply
                        .send(Err(EngineError::Unavailable(reason.clone())));
                }
                continue;
            }
            // No panic may end this thread: every write to the shard depends on it. After one,
            // the partition is rebuilt from the log, which is the truth.
            if catch_unwind(AssertUnwindSafe(|| self.commit(batch, &mut rebuild))).is_err() {
                self.recover("a write batch panicked", &mut rebuild);
            }
            if catch_unwind(AssertUnwindSafe(|| self.maintain(&mut rebuild))).is_err() {
                self.recover("maintenance panicked", &mut rebuild);
            }
            if catch_unwind(AssertUnwindSafe(|| self.link_backlog())).is_err() {
                self.recover("linking into the graph panicked", &mut rebuild);
            }
        }
        // Shutting down: leave a snapshot so the next start loads instead of replaying.
        if self.ops_since_snapshot > 0 && !self.state.is_discarded() {
            self.snapshot();
        }
        tracing::debug!(collection = %self.state.collection, shard = self.state.shard, "shard writer stopped");
    }

    /// Takes more jobs that arrived together with `first`, up to the batch bound.
    fn gather(&self, first: WriteJob) -> Vec<WriteJob> {
        let mut ops = first.ops.len();
        let mut batch = vec![first];
        if self.storage.fsync == FsyncMode::Always {
            return batch;
        }
        let deadline = Instant::now() + Duration::from_micros(self.storage.batch_window_us);
        while ops < self.storage.max_batch_ops {
            let next = if self.storage.batch_window_us == 0 {
                self.rx.try_recv().ok()
            } else {
                self.rx.recv_deadline(deadline).ok()
            };
            match next {
                Some(job) => {
                    ops += job.ops.len();
                    batch.push(job);
                }
                None => break,
            }
        }
        batch
    }

    fn commit(&mut self, mut batch: Vec<WriteJob>, rebuild: &mut Option<Rebuild>) {
        let partition = self.state.partition();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            .max(self.last_stamp_ns + 1);
        let jobs = batch
            .iter_mut()
            .map(|j| std::mem::take(&mut j.ops))
            .collect();
        let (resolved, max_ts) = {
            let versions = self.state.versions();
            resolve(
                &partition,
                &versions,
                &self.origin,
                now,
                self.state.seq() + 1,
                jobs,
            )
        };
        // Stamps of one shard strictly increase even if the clock steps back.
        self.last_stamp_ns = max_ts;
        let (records, versions, outcomes) =
            (resolved.records, resolved.versions, resolved.outcomes);
        let seq = records.last().map_or(self.state.seq(), |(s, _)| *s);
        let mark = self.log.mark();
        if let Err(e) = self.persist(&records, &versions) {
            tracing::error!(collection = %self.state.collection, shard = self.state.shard, error = %e, "write log failed; writes refused");
            for job in batch {
                let _ = job
                    .reply
                    .send(Err(EngineError::Internal(format!("write log: {e}"))));
            }
            return;
        }
        let changes = changes_of(&partition, &records);
        if catch_unwind(AssertUnwindSafe(|| partition.apply(&records))).is_err() {
            // Validation should make this impossible; if it happens anyway, the batch was never
            // acknowledged, so it leaves the log again, and the partition is rebuilt from disk.
            metrics::counter!("ruvector_shard_apply_failures_total").increment(1);
            tracing::error!(collection = %self.state.collection, shard = self.state.shard, ops = records.len(), "a write batch could not be applied: refused and removed from the log");
            let cut = self.log.cut_back(mark);
            for job in batch {
                let _ = job.reply.send(Err(EngineError::Internal(
                    "the write could not be applied to the index and was not stored".into(),
                )));
            }
            if let Err(e) = cut {
                tracing::error!(collection = %self.state.collection, shard = self.state.shard, error = %e, "could not cut the refused batch from the log; replay will quarantine it");
            }
            self.recover("a write batch could not be applied", rebuild);
            return;
        }

        {
            let mut table = self.state.versions_mut();
            for ((_, op), v) in records.iter().zip(versions) {
                if let Some(v) = v {
                    table.record(op, v);
                }
            }
        }
        if let Some(r) = rebuild.as_mut() {
            r.backlog.extend(records.iter().cloned());
        }
        self.ops_since_snapshot += records.len() as u64;
        self.state.set_seq(seq);
        metrics::counter!("ruvector_shard_writes_total", "collection" => self.state.collection.to_string())
            .increment(records.len() as u64);
        for (job, outcome) in batch.into_iter().zip(outcomes) {
            let _ = job.reply.send(Ok(outcome));
        }
        // Subscribers are matched after the writers have their answer (still in order, still on
        // this thread): thousands of standing queries never add to a write's latency.
        let collection = self.state.collection.clone();
        let hub = &self.state.hub;
        if catch_unwind(AssertUnwindSafe(|| hub.publish(&collection, changes))).is_err() {
            metrics::counter!("ruvector_hub_panics_total").increment(1);
            tracing::error!(collection = %collection, "publishing changes to subscribers panicked; the writes stand");
        }
    }

    fn persist(
        &mut self,
        records: &[(u64, Op)],
        versions: &[Option<Arc<PointVersion>>],
    ) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.log.append(
            records
                .iter()
                .zip(versions)
                .map(|((s, op), v)| (*s, v.as_deref(), op)),
        )?;
        if self.storage.fsync != FsyncMode::Never {
            let t = Instant::now();
            self.log.sync()?;
            metrics::histogram!("ruvector_wal_fsync_seconds").record(t.elapsed().as_secs_f64());
        } else {
            self.log.commit_len();
        }
        metrics::histogram!("ruvector_wal_batch_ops").record(records.len() as f64);
        Ok(())
    }

    /// Links acknowledged points into the graph: while writes wait, only down to
    /// `index.max_unindexed` (so the exact scan of the rest stays bounded); with none waiting,
    /// all of them, a chunk at a time so a write that arrives waits at most one chunk.
    fn link_backlog(&mut self) {
        let p = self.state.partition();
        let threads = self.index.build_threads();
        loop {
            let waiting = p.unindexed();
            if waiting == 0 || (waiting <= self.index.max_unindexed && !self.rx.is_empty()) {
                break;
            }
            let t = Instant::now();
            let linked = p.link_pending(threads, LINK_CHUNK);
            metrics::histogram!("ruvector_index_link_seconds").record(t.elapsed().as_secs_f64());
            metrics::counter!("ruvector_index_linked_total").increment(linked as u64);
            if linked == 0 {
                break;
            }
            self.state.publish_unindexed(p.unindexed());
        }
        self.state.publish_unindexed(p.unindexed());
    }

    /// Drops tombstones older than `regions.tombstone_retention_s` (at most once a minute).
    fn prune_tombstones(&mut self) {
        let retention = self.origin.tombstone_retention_s;
        if retention == 0 || self.last_prune.elapsed() < PRUNE_EVERY {
            return;
        }
        self.last_prune = Instant::now();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let before = now.saturating_sub(retention.saturating_mul(1_000_000_000));
        let dropped = self.state.versions_mut().prune_graves(before);
        if dropped > 0 {
            metrics::counter!("ruvector_tombstones_pruned_total").increment(dropped as u64);
        }
    }

    fn maintain(&mut self, rebuild: &mut Option<Rebuild>) {
        self.state.publish_gauges();
        self.prune_tombstones();
        // Finish a rebuild: replay what changed meanwhile, then swap the new partition in.
        if let Some(r) = rebuild.as_mut() {
            if let Ok(Rebuilt(fresh)) = r.done.try_recv() {
                let Some(r) = rebuild.take() else { return };
                fresh.apply(&r.backlog);
                // Searches scan what is not linked: the swap waits until that is within bounds.
                while fresh.unindexed() > self.index.max_unindexed {
                    fresh.link_pending(self.index.build_threads(), LINK_CHUNK);
                }
                let dead = self.state.partition().table().dead();
                self.state.swap_partition(Arc::new(fresh));
                metrics::counter!("ruvector_index_rebuilds_total").increment(1);
                tracing::info!(collection = %self.state.collection, shard = self.state.shard, reclaimed = dead, "shard graph rebuilt without tombstones");
            } else if r.backlog.len() > MAX_REBUILD_BACKLOG {
                tracing::warn!(collection = %self.state.collection, shard = self.state.shard, "rebuild fell too far behind writes; abandoned");
                *rebuild = None;
            }
        } else {
            let p = self.state.partition();
            let (dead, total) = {
                let t = p.table();
                (t.dead(), t.slots.len())
            };
            if dead >= self.index.rebuild_min_tombstones
                && total > 0
                && dead as f64 / total as f64 > self.index.rebuild_tombstone_fraction
            {
                let (tx, done) = crossbeam_channel::bounded(1);
                let threads = self.index.build_threads();
                let spawned = std::thread::Builder::new()
                    .name(format!(
                        "rebuild-{}-{}",
                        self.state.collection, self.state.shard
                    ))
                    .spawn(move || {
                        let _ = tx.send(Rebuilt(p.compacted(threads)));
                    });
                if spawned.is_ok() {
                    tracing::info!(collection = %self.state.collection, shard = self.state.shard, dead, total, "rebuilding shard graph in the background");
                    *rebuild = Some(Rebuild {
                        done,
                        backlog: Vec::new(),
                    });
                }
            }
        }
        let due = self.ops_since_snapshot >= self.storage.snapshot_max_ops
            || (self.ops_since_snapshot > 0
                && self.last_snapshot.elapsed()
                    >= Duration::from_secs(self.storage.snapshot_interval_s));
        if due {
            self.snapshot();
        }
    }

    /// Rebuilds the partition from disk after a failure (see `run`).
    fn recover(&mut self, reason: &str, rebuild: &mut Option<Rebuild>) {
        *rebuild = None;
        metrics::counter!("ruvector_shard_recoveries_total").increment(1);
        let spec = *self.state.partition().spec();
        let reloaded = load::load_partition(&self.dir, spec, ReplayMode::Strict).and_then(|l| {
            let log = WriteLog::create(&self.dir, l.report.last_seq + 1)?;
            Ok((l, log))
        });
        match reloaded {
            Ok((l, log)) => {
                tracing::warn!(collection = %self.state.collection, shard = self.state.shard, reason, points = l.partition.live(), "shard partition rebuilt from disk");
                self.state.set_seq(l.report.last_seq);
                self.state.swap_partition(Arc::new(l.partition));
                self.state.replace_versions(l.versions);
                self.log = log;
            }
            Err(e) => {
                tracing::error!(collection = %self.state.collection, shard = self.state.shard, reason, error = %e, "shard could not be rebuilt from disk: writes refused");
                self.failed = Some(format!(
                    "shard {} of {:?} failed: {e}",
                    self.state.shard, self.state.collection
                ));
            }
        }
    }

    fn snapshot(&mut self) {
        let seq = self.state.seq();
        let partition = self.state.partition();
        let t = Instant::now();
        let keep = self.kept_snapshot.filter(|k| *k < seq);
        // The log after the last published record is the replication outbox: kept.
        let keep_log_after = keep.unwrap_or(seq).min(self.state.published());
        let result = {
            let versions = self.state.versions();
            snapshot::write(&self.dir, seq, &partition, &versions, keep)
        }
        .and_then(|_| self.log.rotate_after_snapshot(seq, keep_log_after));
        self.last_snapshot = Instant::now();
        match result {
            Ok(()) => {
                self.kept_snapshot = Some(seq);
                self.ops_since_snapshot = 0;
                metrics::histogram!("ruvector_snapshot_seconds").record(t.elapsed().as_secs_f64());
                tracing::info!(collection = %self.state.collection, shard = self.state.shard, seq, ms = t.elapsed().as_millis() as u64, "snapshot written");
            }
            Err(e) => {
                metrics::counter!("ruvector_snapshot_failures_total").increment(1);
                tracing::error!(collection = %self.state.collection, shard = self.state.shard, error = %e, "snapshot failed; the log keeps every write");
            }
        }
    }
}
