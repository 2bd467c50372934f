//! The engine's settings. Defaults live once, in `config/default.toml` of the server package;
//! these structs only give them shape and check them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::index::filter::FilterLimits;
use crate::index::hnsw::SearchTuning;
use crate::storage::FsyncMode;
use crate::types::{validate_collection_name, HnswParams, Metric};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Root of all data: `<data_dir>/collections/<name>/shard-<i>/`.
    pub data_dir: PathBuf,
    pub fsync: FsyncMode,
    /// With `fsync = "batch"`: how long the writer waits for more writes to share an fsync.
    /// 0 takes whatever queued up during the previous fsync (no added latency).
    pub batch_window_us: u64,
    /// Most ops one group commit takes.
    pub max_batch_ops: usize,
    /// Bound of each shard's write queue (requests); full answers `overloaded`.
    pub writer_queue: usize,
    /// A snapshot is taken when this many seconds passed since the last one and something changed…
    pub snapshot_interval_s: u64,
    /// …or as soon as this many ops were written since the last one.
    pub snapshot_max_ops: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// Shards of a new collection when the request does not say; 0 = number of cores.
    pub default_shards: usize,
    pub max_shards: usize,
    pub default_metric: Metric,
    pub hnsw: HnswParams,
    pub max_dimension: usize,
    /// Largest `k` a search may ask for.
    pub max_k: usize,
    /// Most points in one upsert request.
    pub max_points_per_request: usize,
    /// Most searches in one batch search request.
    pub max_batch_searches: usize,
    /// Most collections (held-back ones included).
    pub max_collections: usize,
    /// Most shards over all collections: each holds an open log file and a writer thread.
    pub max_total_shards: usize,
    /// Most hits one request may ask for (the sum of `k` over a batch); beyond, 413.
    pub max_request_hits: usize,
    /// Most vector components one answer may carry (`k` × dimension over the searches that
    /// ask `with_vector`); beyond, 413.
    pub max_answer_floats: usize,
    /// Most points on one page of `GET .../points` (also held to `max_answer_floats`).
    pub max_page_points: usize,
    /// Largest metadata of one point, as serialized JSON bytes.
    pub max_metadata_bytes: usize,
    /// Deepest nesting of a point's metadata (objects and arrays).
    pub max_metadata_depth: usize,
    /// Most conditions in one filter (nested ones included).
    pub max_filter_conditions: usize,
    /// Most JSON values one filter may compare against (`match` and `any` elements).
    pub max_filter_values: usize,
    /// Deepest nesting of `must`/`should`/`must_not` in one filter.
    pub max_filter_depth: usize,
    /// Rebuild a shard's graph when tombstones exceed this fraction of its slots…
    pub rebuild_tombstone_fraction: f64,
    /// …and there are at least this many of them.
    pub rebuild_min_tombstones: usize,
    /// Shards with at most this many points are searched exactly.
    pub exact_scan_max_points: usize,
    /// Filters matching less than this fraction of points are answered by an exact scan.
    pub exact_scan_selectivity: f64,
    /// Most points per shard acknowledged but not yet linked into the graph (searches scan them
    /// exactly); past it the shard's writer links before it takes more writes.
    pub max_unindexed: usize,
    /// Threads linking points into a shard's graph; 0 = number of cores.
    pub build_threads: usize,
    /// Threads of the search pool; 0 = number of cores.
    pub search_threads: usize,
    /// Bound of the search pool's queue (shard searches); full answers `overloaded`.
    pub search_queue: usize,
    /// Deadline of one search across all shards.
    pub search_timeout_ms: u64,
    /// An unfiltered graph search with at most this ef (or k) runs on the requesting thread,
    /// shard after shard, instead of on the search pool (a thread hand-off costs more than
    /// such a search); 0 sends every search to the pool.
    pub inline_search_max_ef: usize,
    /// Bound of each shard actor's mailbox.
    pub shard_mailbox: usize,
}

/// Agent coordination (see `config/default.toml` for each key).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordConfig {
    /// An agent without a heartbeat for this long goes offline; its tasks return to pending.
    pub heartbeat_timeout_ms: u64,
    /// How often agents and memory TTLs are checked.
    pub sweep_interval_ms: u64,
    /// Messages kept per topic for late subscribers.
    pub topic_history: usize,
    /// Pending tasks a claim looks at before answering `no_task` (capability mismatches).
    pub claim_scan: usize,
    /// A coordinator snapshots its state after this many logged changes.
    pub snapshot_every_ops: u64,
    pub max_tasks: usize,
    pub max_agents: usize,
    pub max_memory_entries: usize,
    pub max_topic_subscribers: usize,
    /// Largest task data, result, payload, memory value or agent metadata (JSON bytes).
    pub max_value_bytes: usize,
    /// Largest embedding.
    pub max_dimension: usize,
    /// Largest `k` of a similarity or memory search.
    pub max_k: usize,
    /// Bound of each coordinator's mailbox (requests).
    pub mailbox: usize,
    /// The collection holding a tenant's memory embeddings (in the tenant's namespace).
    pub memory_collection: String,
    /// Longest a memory request waits for the memory collection.
    pub index_timeout_ms: u64,
}

impl CoordConfig {
    pub fn validate(&self) -> Result<()> {
        let fail = |key: &str, why: &str| Err(EngineError::invalid(format!("{key}: {why}")));
        for (key, v) in [
            (
                "coordination.heartbeat_timeout_ms",
                self.heartbeat_timeout_ms,
            ),
            ("coordination.sweep_interval_ms", self.sweep_interval_ms),
            ("coordination.topic_history", self.topic_history as u64),
            ("coordination.claim_scan", self.claim_scan as u64),
            ("coordination.snapshot_every_ops", self.snapshot_every_ops),
            ("coordination.max_value_bytes", self.max_value_bytes as u64),
            ("coordination.max_dimension", self.max_dimension as u64),
            ("coordination.max_k", self.max_k as u64),
            ("coordination.mailbox", self.mailbox as u64),
            ("coordination.index_timeout_ms", self.index_timeout_ms),
        ] {
            if v == 0 {
                return fail(key, "must be at least 1");
            }
        }
        if validate_collection_name(&self.memory_collection).is_err() {
            return fail(
                "coordination.memory_collection",
                "must match [A-Za-z0-9_-]{1,64}",
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    pub storage: StorageConfig,
    pub index: IndexConfig,
    /// Who this server is: every logged write carries it (not a config section of its own: the
    /// server's region and instance id).
    #[serde(default, skip)]
    pub origin: WriteOrigin,
}

/// The region and instance a write is made in; with an empty region writes carry no version.
/// With `publish`, each shard keeps its log until the change log (Redis) holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOrigin {
    pub region: String,
    pub instance: String,
    pub publish: bool,
    /// How long a delete's tombstone is kept for late concurrent writes to lose against it.
    pub tombstone_retention_s: u64,
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

impl IndexConfig {
    pub fn shards_or_default(&self, asked: Option<usize>) -> usize {
        match asked {
            Some(n) => n,
            None if self.default_shards == 0 => cores(),
            None => self.default_shards,
        }
    }

    pub fn search_threads(&self) -> usize {
        if self.search_threads == 0 {
            cores()
        } else {
            self.search_threads
        }
    }

    pub fn build_threads(&self) -> usize {
        if self.build_threads == 0 {
            cores()
        } else {
            self.build_threads
        }
    }

    pub fn filter_limits(&self) -> FilterLimits {
        FilterLimits {
            max_conditions: self.max_filter_conditions,
            max_values: self.max_filter_values,
            max_depth: self.max_filter_depth,
        }
    }

    pub fn tuning(&self) -> SearchTuning {
        SearchTuning {
            exact_scan_max_points: self.exact_scan_max_points,
            exact_scan_selectivity: self.exact_scan_selectivity,
        }
    }
}

impl EngineConfig {
    /// Checks ranges; the message names the key at fault.
    pub fn validate(&self) -> Result<()> {
        let fail = |key: &str, why: &str| Err(EngineError::invalid(format!("{key}: {why}")));
        let i = &self.index;
        let s = &self.storage;
        if let Err(e) = i.hnsw.validate() {
            return fail("index.hnsw", &e.to_string());
        }
        if !(1..=1024).contains(&i.max_shards) {
            return fail("index.max_shards", "must be 1..=1024");
        }
        if i.default_shards > i.max_shards {
            return fail("index.default_shards", "must not exceed index.max_shards");
        }
        if !(1..=65536).contains(&i.max_dimension) {
            return fail("index.max_dimension", "must be 1..=65536");
        }
        if !(1..=100_000).contains(&i.max_k) {
            return fail("index.max_k", "must be 1..=100000");
        }
        for (key, v) in [
            ("index.max_request_hits", i.max_request_hits),
            ("index.max_collections", i.max_collections),
            ("index.max_total_shards", i.max_total_shards),
            ("index.max_page_points", i.max_page_points),
            ("index.max_answer_floats", i.max_answer_floats),
            ("index.max_metadata_bytes", i.max_metadata_bytes),
            ("index.max_metadata_depth", i.max_metadata_depth),
            ("index.max_filter_conditions", i.max_filter_conditions),
            ("index.max_filter_values", i.max_filter_values),
            ("index.max_filter_depth", i.max_filter_depth),
        ] {
            if v == 0 {
                return fail(key, "must be at least 1");
            }
        }
        if i.max_batch_searches == 0 {
            return fail("index.max_batch_searches", "must be at least 1");
        }
        if i.max_points_per_request == 0 {
            return fail("index.max_points_per_request", "must be at least 1");
        }
        if i.build_threads > 256 {
            return fail("index.build_threads", "must be 0 (cores) or at most 256");
        }
        if !(0.0..=1.0).contains(&i.rebuild_tombstone_fraction) {
            return fail("index.rebuild_tombstone_fraction", "must be within 0..=1");
        }
        if !(0.0..=1.0).contains(&i.exact_scan_selectivity) {
            return fail("index.exact_scan_selectivity", "must be within 0..=1");
        }
        if i.search_queue == 0 {
            return fail("index.search_queue", "must be at least 1");
        }
        if i.search_timeout_ms == 0 {
            return fail("index.search_timeout_ms", "must be at least 1");
        }
        if i.shard_mailbox == 0 {
            return fail("index.shard_mailbox", "must be at least 1");
        }
        if s.writer_queue == 0 {
            return fail("storage.writer_queue", "must be at least 1");
        }
        if s.max_batch_ops == 0 {
            return fail("storage.max_batch_ops", "must be at least 1");
        }
        if s.snapshot_max_ops == 0 {
            return fail("storage.snapshot_max_ops", "must be at least 1");
        }
        if s.data_dir.as_os_str().is_empty() {
            return fail("storage.data_dir", "must not be empty");
        }
        Ok(())
    }
}
