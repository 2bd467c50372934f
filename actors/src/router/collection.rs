//! A collection's routing table: its definition and the shard actors that hold its points.
//! Writes go to the shard that owns the id (crc32 of the id: stable across builds and
//! restarts, unlike std's hasher); searches go to every shard at once and are merged.

use std::path::PathBuf;
use std::sync::Arc;

use actix::Addr;
use futures_util::future::join_all;
use serde::Serialize;

use crate::config::IndexConfig;
use crate::error::{EngineError, Result};
use crate::index::distance::to_graph_form;
use crate::index::filter::Filter;
use crate::index::versions::Grave;
use crate::shard::{
    search_shard, ReplicatedChange, ShardActor, ShardQuery, ShardSearch, ShardState, ShardWrite,
    WriteOp,
};
use crate::types::{
    apply_patch, validate_metadata, validate_point_id, validate_vector, CollectionSpec, Hit,
    HnswParams, Metadata, Metric, Point,
};
use crate::version::PointVersion;

/// A point of a scroll page: the point, its sequence number in its shard, its version.
pub type PagedPoint = (Point, u64, Option<Arc<PointVersion>>);

pub struct ShardHandle {
    pub addr: Addr<ShardActor>,
    pub state: Arc<ShardState>,
}

pub struct Collection {
    pub spec: CollectionSpec,
    pub dir: PathBuf,
    /// Random per load or creation, so ETags never repeat across a delete and re-create.
    pub generation: u64,
    pub(super) shards: Vec<ShardHandle>,
    pub(super) limits: Arc<IndexConfig>,
}

/// A collection as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CollectionInfo {
    pub name: String,
    pub dimension: usize,
    pub metric: Metric,
    pub shards: usize,
    pub count: usize,
    pub hnsw: HnswParams,
}

/// A search as the engine takes it (the HTTP layer parses the JSON into this).
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub vector: Vec<f32>,
    pub k: usize,
    pub ef_search: Option<usize>,
    pub filter: Option<Filter>,
    pub score_threshold: Option<f32>,
    pub with_vector: bool,
    pub with_metadata: bool,
}

impl Collection {
    pub fn shard_of(&self, id: &str) -> usize {
        crc32fast::hash(id.as_bytes()) as usize % self.shards.len()
    }

    pub fn count(&self) -> usize {
        self.shards.iter().map(|s| s.state.partition().live()).sum()
    }

    /// Changes whenever any shard applies a write.
    pub fn version(&self) -> u64 {
        self.shards.iter().map(|s| s.state.seq()).sum()
    }

    pub fn etag(&self) -> String {
        format!("\"{:x}-{:x}\"", self.generation, self.version())
    }

    pub fn info(&self) -> CollectionInfo {
        CollectionInfo {
            name: self.spec.name.clone(),
            dimension: self.spec.dimension,
            metric: self.spec.metric,
            shards: self.spec.shards,
            count: self.count(),
            hnsw: self.spec.hnsw,
        }
    }

    /// The shared state of each shard (the change-log publisher reads their logs).
    pub fn shard_states(&self) -> impl Iterator<Item = &Arc<ShardState>> {
        self.shards.iter().map(|s| &s.state)
    }

    /// Up to `limit` points in id order (bytewise) after `after`, over all shards, each with the
    /// sequence number of its version in its shard and its replication version (when writes are
    /// stamped); and whether more follow. Each shard reads at most `limit + 1` points from its
    /// ordered id map, so a page costs O(shards × limit), not a scan.
    pub fn page(&self, after: Option<&str>, limit: usize) -> (Vec<PagedPoint>, bool) {
        let mut all: Vec<PagedPoint> = self
            .shards
            .iter()
            .flat_map(|s| {
                let points = s.state.partition().page(after, limit.saturating_add(1));
                let versions = s.state.versions();
                points
                    .into_iter()
                    .map(|(p, seq)| {
                        let v = versions.live(&p.id).cloned();
                        (p, seq, v)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort_unstable_by(|a, b| a.0.id.as_bytes().cmp(b.0.id.as_bytes()));
        let more = all.len() > limit;
        all.truncate(limit);
        (all, more)
    }

    /// A page of delete tombstones (id, version) in id order after `after`, and whether more
    /// follow: what a full resync needs besides the points (deletes a blind link missed).
    pub fn deleted_page(&self, after: Option<&str>, limit: usize) -> (Vec<Grave>, bool) {
        let mut all: Vec<Grave> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.state
                    .versions()
                    .graves_after(after, limit.saturating_add(1))
            })
            .collect();
        all.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let more = all.len() > limit;
        all.truncate(limit);
        (all, more)
    }

    pub fn get(&self, id: &str) -> Result<Point> {
        validate_point_id(id)?;
        self.shards[self.shard_of(id)]
            .state
            .partition()
            .get(id)
            .ok_or_else(|| EngineError::NotFound(format!("point {id:?}")))
    }

    /// Checks every op before anything is written, so a bad point fails the request whole.
    pub fn validate_writes(&self, ops: &[WriteOp]) -> Result<()> {
        if ops.len() > self.limits.max_points_per_request {
            return Err(EngineError::invalid(format!(
                "at most {} points per request",
                self.limits.max_points_per_request
            )));
        }
        for op in ops {
            match op {
                WriteOp::Upsert {
                    id,
                    vector,
                    metadata,
                } => {
                    validate_point_id(id)?;
                    validate_vector(vector, self.spec.dimension, self.spec.metric)?;
                    if let Some(m) = metadata {
                        self.check_metadata(m)?;
                    }
                }
                WriteOp::Patch { id, patch } => {
                    validate_point_id(id)?;
                    self.check_metadata(patch)?;
                    // The merged result is bounded too (checked against the point as it is now).
                    let current = self.shards[self.shard_of(id)]
                        .state
                        .partition()
                        .metadata_of(id)
                        .flatten();
                    if let Some(current) = current {
                        let mut merged = Metadata::clone(&current);
                        apply_patch(&mut merged, patch);
                        self.check_metadata(&merged)?;
                    }
                }
                WriteOp::Delete { id } => validate_point_id(id)?,
                WriteOp::Replicated { id, change, .. } => {
                    validate_point_id(id)?;
                    match change {
                        ReplicatedChange::Upsert { vector, metadata } => {
                            validate_vector(vector, self.spec.dimension, self.spec.metric)?;
                            if let Some(m) = metadata {
                                self.check_metadata(m)?;
                            }
                        }
                        ReplicatedChange::Metadata { metadata: Some(m) } => {
                            self.check_metadata(m)?
                        }
                        ReplicatedChange::Metadata { metadata: None }
                        | ReplicatedChange::Delete => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// The index limits this collection's requests are held to.
    pub fn limits(&self) -> &IndexConfig {
        &self.limits
    }

    fn check_metadata(&self, m: &Metadata) -> Result<()> {
        validate_metadata(
            m,
            self.limits.max_metadata_bytes,
            self.limits.max_metadata_depth,
        )
    }

    /// Applies ops durably; per op, whether its target existed (always true for upserts).
    pub async fn write(self: Arc<Self>, ops: Vec<WriteOp>) -> Result<Vec<bool>> {
        self.validate_writes(&ops)?;
        let n = self.shards.len();
        let mut per_shard: Vec<(Vec<usize>, Vec<WriteOp>)> = vec![(vec![], vec![]); n];
        for (i, op) in ops.into_iter().enumerate() {
            let s = self.shard_of(op.id());
            per_shard[s].0.push(i);
            per_shard[s].1.push(op);
        }
        let total: usize = per_shard.iter().map(|(i, _)| i.len()).sum();
        let mut calls = Vec::new();
        for (s, (idx, ops)) in per_shard.into_iter().enumerate() {
            if !ops.is_empty() {
                let addr = self.shards[s].addr.clone();
                calls.push(async move { (idx, addr.send(ShardWrite(ops)).await) });
            }
        }
        let mut out = vec![false; total];
        for (idx, res) in join_all(calls).await {
            let outcome = res.map_err(EngineError::from)??;
            for (i, existed) in idx.into_iter().zip(outcome) {
                out[i] = existed;
            }
        }
        Ok(out)
    }

    /// Checks a search and brings its vector into graph form.
    fn prepare(&self, req: &SearchRequest) -> Result<ShardQuery> {
        if req.k == 0 || req.k > self.limits.max_k {
            return Err(EngineError::invalid(format!(
                "k must be between 1 and {}, got {}",
                self.limits.max_k, req.k
            )));
        }
        if let Some(ef) = req.ef_search {
            if !(1..=4096).contains(&ef) {
                return Err(EngineError::invalid("ef_search must be between 1 and 4096"));
            }
        }
        if let Some(t) = req.score_threshold {
            if !t.is_finite() {
                return Err(EngineError::invalid(
                    "score_threshold must be a finite number",
                ));
            }
        }
        validate_vector(&req.vector, self.spec.dimension, self.spec.metric)?;
        Ok(ShardQuery {
            vector: to_graph_form(self.spec.metric, &req.vector),
            k: req.k,
            ef: req.ef_search.unwrap_or(self.spec.hnsw.ef_search),
            filter: req.filter.clone(),
            with_vector: req.with_vector,
            with_metadata: req.with_metadata,
        })
    }

    /// Fans the search out to every shard in parallel and merges their top-k lists.
    pub async fn search(self: Arc<Self>, req: SearchRequest) -> Result<Vec<Hit>> {
        Ok(self.search_ranked(req).await?.collect())
    }

    /// Like `search`, but hands back the merge itself: hits come out best first, one at a time,
    /// so a stream can send each as soon as it is final without building the whole answer.
    pub async fn search_ranked(self: Arc<Self>, req: SearchRequest) -> Result<Ranked> {
        let query = Arc::new(self.prepare(&req)?);
        // A small search runs shard after shard on this thread: each hand-off to another
        // thread and back cost more CPU than the search itself (futex and eventfd wake-ups;
        // docs/BENCHMARKS.md "The server path"). Small means bounded: no filter (which can turn
        // into a scan), ef and k within `index.inline_search_max_ef`, and every shard past the
        // exact-scan size, so a graph search plus the scan of at most `index.max_unindexed`
        // points not linked yet. Others go to the search pool, all shards in parallel.
        let tuning = self.limits.tuning();
        let inline = query.filter.is_none()
            && query.ef.max(query.k) <= self.limits.inline_search_max_ef
            && self
                .shards
                .iter()
                .all(|s| s.state.partition().searches_graph(&tuning));
        let calls: Vec<_> = self
            .shards
            .iter()
            .filter(|_| !inline)
            .map(|s| s.addr.send(ShardSearch(query.clone())))
            .collect();
        let mut lists = Vec::with_capacity(self.shards.len());
        if inline {
            for s in &self.shards {
                // As on the pool: a panicking search answers an error, not a lost worker.
                let one = || search_shard(&s.state, &query, &tuning);
                let hits =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(one)).map_err(|_| {
                        metrics::counter!("ruvector_search_panics_total").increment(1);
                        EngineError::Internal("a shard search failed".into())
                    })?;
                lists.push(hits);
            }
        }
        for res in join_all(calls).await {
            lists.push(res.map_err(EngineError::from)??);
        }
        Ok(Ranked::new(lists, req.k, req.score_threshold))
    }
}

/// A k-way merge of per-shard lists that are each sorted best first, yielding the top k in the
/// contract's rank order (shards are few, so a linear pick of the best head beats a heap).
pub struct Ranked {
    iters: Vec<std::vec::IntoIter<Hit>>,
    heads: Vec<Option<Hit>>,
    left: usize,
    threshold: Option<f32>,
}

impl Ranked {
    pub fn new(lists: Vec<Vec<Hit>>, k: usize, threshold: Option<f32>) -> Ranked {
        let mut iters: Vec<std::vec::IntoIter<Hit>> =
            lists.into_iter().map(Vec::into_iter).collect();
        let heads = iters.iter_mut().map(Iterator::next).collect();
        Ranked {
            iters,
            heads,
            left: k,
            threshold,
        }
    }
}

impl Iterator for Ranked {
    type Item = Hit;

    fn next(&mut self) -> Option<Hit> {
        if self.left == 0 {
            return None;
        }
        let mut best: Option<usize> = None;
        for (i, h) in self.heads.iter().enumerate() {
            let Some(h) = h else { continue };
            let better = match best.and_then(|b| self.heads[b].as_ref()) {
                None => true,
                Some(cur) => Hit::rank_cmp(h, cur) == std::cmp::Ordering::Less,
            };
            if better {
                best = Some(i);
            }
        }
        let b = best?;
        let hit = std::mem::replace(&mut self.heads[b], self.iters[b].next())?;
        if self.threshold.is_some_and(|t| hit.score < t) {
            // Everything after is worse still.
            self.left = 0;
            return None;
        }
        self.left -= 1;
        Some(hit)
    }
}

/// The top k of per-shard lists, merged.
pub fn merge_top_k(lists: Vec<Vec<Hit>>, k: usize) -> Vec<Hit> {
    Ranked::new(lists, k, None).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, score: f32) -> Hit {
        Hit {
            id: Arc::from(id),
            score,
            distance: -score,
            metadata: None,
            vector: None,
        }
    }

    #[test]
    fn merge_keeps_rank_order_and_breaks_ties_by_id() {
        let a = vec![hit("a", 0.9), hit("c", 0.5), hit("e", 0.1)];
        let b = vec![hit("b", 0.9), hit("d", 0.7)];
        let merged = merge_top_k(vec![a, b, vec![]], 4);
        let ids: Vec<&str> = merged.iter().map(|h| h.id.as_ref()).collect();
        assert_eq!(ids, ["a", "b", "d", "c"]);
        assert_eq!(merge_top_k(vec![vec![hit("x", 1.0)]], 10).len(), 1);
    }
}
