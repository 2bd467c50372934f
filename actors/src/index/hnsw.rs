//! One HNSW partition: an hnsw_rs graph plus the slot table that maps graph ids to points.
//!
//! hnsw_rs cannot delete, so a point lives in a *slot* whose number is its graph id. Deleting or
//! replacing a point tombstones its slot (the graph keeps the node for navigation, searches skip
//! it); when tombstones pass a configured fraction the shard builds a compacted partition in the
//! background and swaps it in. Searches hold the slot table's read lock for their duration
//! (parking_lot: no poisoning, cheap uncontended reads); writers take the write lock only to flip
//! slots, never while inserting into the graph, so a slow insert does not stall searches.

use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use hnsw_rs::prelude::Hnsw;
use parking_lot::RwLock;

use super::distance::{exact_score, to_graph_form, SimdDistance};
use super::filter::Filter;
use super::view::GraphView;
use crate::types::{Hit, HnswParams, Metadata, Metric, Point};

/// hnsw_rs's maximum number of layers.
const MAX_LAYERS: usize = 16;
/// How many slots the selectivity estimate of a filter looks at.
const SELECTIVITY_SAMPLE: usize = 256;
/// Batches at least this large are inserted with hnsw_rs's parallel insert (both cores).
const PARALLEL_INSERT_MIN: usize = 64;

/// What a partition is: metric, dimension and graph parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSpec {
    pub metric: Metric,
    pub dimension: usize,
    pub hnsw: HnswParams,
}

/// Knobs of the search path, from config.
#[derive(Debug, Clone, Copy)]
pub struct SearchTuning {
    /// The flat graph view is used while at most this many slots were added since it was frozen
    /// (they are scanned exactly); past it, hnsw_rs's own search answers.
    pub view_max_delta: usize,
    /// Partitions with at most this many live points are scanned exactly.
    pub exact_scan_max_points: usize,
    /// Filters estimated to match less than this fraction of points are answered by an exact scan.
    pub exact_scan_selectivity: f64,
}

/// A point's slot. A dead slot keeps its id (for diagnostics) but drops vector and metadata.
#[derive(Debug, Clone)]
pub struct Slot {
    pub id: Arc<str>,
    pub vector: Box<[f32]>,
    /// Shared with the write that set it and the change the hub keeps: one copy per version.
    pub metadata: Option<Arc<Metadata>>,
    /// Sequence number of the write that produced this version of the point.
    pub version: u64,
    pub live: bool,
}

#[derive(Debug, Default)]
pub struct SlotTable {
    pub slots: Vec<Slot>,
    by_id: HashMap<Arc<str>, u32>,
    live: usize,
}

impl SlotTable {
    pub fn from_slots(slots: Vec<Slot>) -> SlotTable {
        let mut by_id = HashMap::with_capacity(slots.len());
        let mut live = 0;
        for (i, s) in slots.iter().enumerate() {
            if s.live {
                by_id.insert(s.id.clone(), i as u32);
                live += 1;
            }
        }
        SlotTable { slots, by_id, live }
    }

    pub fn live(&self) -> usize {
        self.live
    }

    pub fn dead(&self) -> usize {
        self.slots.len() - self.live
    }

    pub fn get(&self, id: &str) -> Option<&Slot> {
        self.by_id.get(id).map(|i| &self.slots[*i as usize])
    }

    fn tombstone(&mut self, id: &str) -> bool {
        match self.by_id.remove(id) {
            Some(i) => {
                let s = &mut self.slots[i as usize];
                s.live = false;
                s.vector = Box::new([]);
                s.metadata = None;
                self.live -= 1;
                true
            }
            None => false,
        }
    }

    fn push(&mut self, slot: Slot) -> usize {
        let i = self.slots.len();
        self.by_id.insert(slot.id.clone(), i as u32);
        self.slots.push(slot);
        self.live += 1;
        i
    }

    fn is_live(&self, i: usize) -> bool {
        self.slots.get(i).is_some_and(|s| s.live)
    }
}

/// A change to a partition, as applied (and as the write log records it).
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Upsert {
        id: String,
        vector: Vec<f32>,
        metadata: Option<Arc<Metadata>>,
    },
    Delete {
        id: String,
    },
    SetMetadata {
        id: String,
        metadata: Option<Arc<Metadata>>,
    },
}

impl Op {
    pub fn id(&self) -> &str {
        match self {
            Op::Upsert { id, .. } | Op::Delete { id } | Op::SetMetadata { id, .. } => id,
        }
    }
}

/// Which way a search was answered (for metrics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchPath {
    /// Our search over the flat graph view (plus an exact scan of the points added since).
    View,
    /// hnsw_rs's own search (no view yet, or too many points added since it was frozen).
    Graph,
    Exact,
}

/// A search against one partition.
pub struct PartitionQuery<'a> {
    /// The query, already in graph form (see `distance::to_graph_form`).
    pub vector: &'a [f32],
    pub k: usize,
    pub ef: usize,
    pub filter: Option<&'a Filter>,
    pub with_vector: bool,
    pub with_metadata: bool,
}

pub struct Partition {
    spec: PartitionSpec,
    graph: Hnsw<'static, f32, SimdDistance>,
    table: RwLock<SlotTable>,
    /// The read-optimised copy of the graph searches use (see `view.rs`).
    view: RwLock<Option<Arc<GraphView>>>,
}

fn new_graph(spec: &PartitionSpec, capacity_hint: usize) -> Hnsw<'static, f32, SimdDistance> {
    Hnsw::new(
        spec.hnsw.m,
        capacity_hint.max(1024),
        MAX_LAYERS,
        spec.hnsw.ef_construction,
        SimdDistance {
            metric: spec.metric,
        },
    )
}

impl Partition {
    pub fn new(spec: PartitionSpec) -> Partition {
        Partition::from_parts(spec, new_graph(&spec, 1024), SlotTable::default())
    }

    /// Slots added since the graph view was frozen (all of them without a view).
    pub fn view_lag(&self) -> usize {
        let slots = self.table.read().slots.len();
        slots
            - self
                .view
                .read()
                .as_ref()
                .map_or(0, |v| v.covered().min(slots))
    }

    /// Freezes a fresh graph view now (blocking; see `refresh_view_in_background`).
    pub fn refresh_view(&self) {
        let slots = self.table.read().slots.len();
        let dist = SimdDistance {
            metric: self.spec.metric,
        };
        // Restored reverse links: up to M more on layer 0 (see `GraphView::freeze`).
        let fresh = GraphView::freeze(&self.graph, slots, dist, self.spec.hnsw.m).map(Arc::new);
        *self.view.write() = fresh;
    }

    /// Refreshes the view when enough slots were added since the last freeze: at least
    /// `min_lag` and at least 1/16 of what the view covers (so the O(n) freezes add up to a
    /// constant factor of the inserts). Must run on the thread that inserts into the graph:
    /// hnsw_rs's point iterator and a concurrent insert can deadlock on its internal locks.
    pub fn refresh_view_if_due(&self, min_lag: usize) -> bool {
        let covered = self.view.read().as_ref().map_or(0, |v| v.covered());
        let lag = self.view_lag();
        if lag == 0 || lag < min_lag.max(covered / 16) {
            return false;
        }
        let t = std::time::Instant::now();
        self.refresh_view();
        metrics::histogram!("ruvector_graph_view_refresh_seconds")
            .record(t.elapsed().as_secs_f64());
        true
    }

    /// A partition from a loaded graph and its slot table (a snapshot).
    pub fn from_parts(
        spec: PartitionSpec,
        graph: Hnsw<'static, f32, SimdDistance>,
        table: SlotTable,
    ) -> Partition {
        Partition {
            spec,
            graph,
            table: RwLock::new(table),
            view: RwLock::new(None),
        }
    }

    /// Builds a graph over `slots` (dead slots are kept as dead slots but not inserted).
    pub fn build(spec: PartitionSpec, slots: Vec<Slot>) -> Partition {
        let graph = new_graph(&spec, slots.len());
        let forms: Vec<(Vec<f32>, usize)> = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.live)
            .map(|(i, s)| (to_graph_form(spec.metric, &s.vector), i))
            .collect();
        let refs: Vec<(&[f32], usize)> = forms.iter().map(|(v, i)| (v.as_slice(), *i)).collect();
        if !refs.is_empty() {
            graph.parallel_insert_slice(&refs);
        }
        Partition::from_parts(spec, graph, SlotTable::from_slots(slots))
    }

    /// A compacted copy: live points only, renumbered, with a freshly built graph.
    pub fn compacted(&self) -> Partition {
        let live: Vec<Slot> = self
            .table
            .read()
            .slots
            .iter()
            .filter(|s| s.live)
            .cloned()
            .collect();
        Partition::build(self.spec, live)
    }

    pub fn spec(&self) -> &PartitionSpec {
        &self.spec
    }

    pub fn graph(&self) -> &Hnsw<'static, f32, SimdDistance> {
        &self.graph
    }

    /// Read access to the slot table (snapshots, counts).
    pub fn table(&self) -> parking_lot::RwLockReadGuard<'_, SlotTable> {
        self.table.read()
    }

    pub fn live(&self) -> usize {
        self.table.read().live()
    }

    pub fn get(&self, id: &str) -> Option<Point> {
        let t = self.table.read();
        t.get(id).map(|s| Point {
            id: s.id.to_string(),
            vector: s.vector.to_vec(),
            metadata: s.metadata.as_deref().cloned(),
        })
    }

    /// The vector of a live point.
    pub fn get_vector(&self, id: &str) -> Option<Vec<f32>> {
        self.table.read().get(id).map(|s| s.vector.to_vec())
    }

    /// Current metadata of a live point.
    pub fn metadata_of(&self, id: &str) -> Option<Option<Arc<Metadata>>> {
        self.table.read().get(id).map(|s| s.metadata.clone())
    }

    /// Applies ops in order: slot changes under one short write lock, then graph inserts without
    /// it (in parallel for large batches).
    pub fn apply(&self, ops: &[(u64, Op)]) {
        let mut inserts: Vec<(Vec<f32>, usize)> = Vec::new();
        {
            let mut t = self.table.write();
            for (seq, op) in ops {
                match op {
                    Op::Upsert {
                        id,
                        vector,
                        metadata,
                    } => {
                        t.tombstone(id);
                        let slot = t.push(Slot {
                            id: Arc::from(id.as_str()),
                            vector: vector.clone().into_boxed_slice(),
                            metadata: metadata.clone(),
                            version: *seq,
                            live: true,
                        });
                        inserts.push((to_graph_form(self.spec.metric, vector), slot));
                    }
                    Op::Delete { id } => {
                        t.tombstone(id);
                    }
                    Op::SetMetadata { id, metadata } => {
                        if let Some(i) = t.by_id.get(id.as_str()).copied() {
                            let s = &mut t.slots[i as usize];
                            s.metadata = metadata.clone();
                            s.version = *seq;
                        }
                    }
                }
            }
        }
        if inserts.len() >= PARALLEL_INSERT_MIN {
            let refs: Vec<(&[f32], usize)> =
                inserts.iter().map(|(v, i)| (v.as_slice(), *i)).collect();
            self.graph.parallel_insert_slice(&refs);
        } else {
            for (v, i) in &inserts {
                self.graph.insert_slice((v, *i));
            }
        }
    }

    /// Top-k of this partition: exactly `min(k, live points passing the filter)` hits, best first.
    pub fn search(&self, q: &PartitionQuery<'_>, tuning: &SearchTuning) -> (Vec<Hit>, SearchPath) {
        let t = self.table.read();
        let want = q.k.min(t.live());
        if want == 0 {
            return (Vec::new(), SearchPath::Exact);
        }
        let exact = t.live() <= tuning.exact_scan_max_points
            || q.filter
                .is_some_and(|f| estimate_selectivity(&t, f) < tuning.exact_scan_selectivity);
        let table = &*t;
        let allowed = |i: usize| {
            table.is_live(i)
                && q.filter
                    .is_none_or(|f| f.matches(table.slots[i].metadata.as_deref()))
        };
        let view = self.view.read().clone();
        let view = view.filter(|v| {
            let delta = t.slots.len().saturating_sub(v.covered()) + v.missing().len();
            delta <= tuning.view_max_delta.max(v.covered() / 8)
        });
        if let (false, Some(v)) = (exact, view) {
            let found = v.search(q.vector, q.k, q.ef, &allowed);
            let mut hits: Vec<Hit> = found
                .iter()
                .map(|(_, i)| self.hit(&t.slots[*i], q))
                .collect();
            // Slots the view does not cover: scanned exactly.
            let delta = (v.covered()..t.slots.len()).chain(v.missing().iter().map(|i| *i as usize));
            hits.extend(self.top_k(&t, q, delta));
            if hits.len() >= want {
                hits.sort_by(Hit::rank_cmp);
                hits.truncate(want);
                return (hits, SearchPath::View);
            }
        } else if !exact {
            let ef = q.ef.max(q.k);
            let found = if q.filter.is_none() && t.dead() == 0 {
                self.graph.search(q.vector, q.k, ef)
            } else {
                let table = &*t;
                let allowed = |i: &usize| {
                    table.is_live(*i)
                        && q.filter
                            .is_none_or(|f| f.matches(table.slots[*i].metadata.as_deref()))
                };
                self.graph.search_filter(q.vector, q.k, ef, Some(&allowed))
            };
            let mut hits: Vec<Hit> = found
                .iter()
                .filter(|n| t.is_live(n.d_id))
                .map(|n| self.hit(&t.slots[n.d_id], q))
                .collect();
            // A graph search can come back short (a very selective filter, a graph still
            // being filled); the contract wants exactly min(k, matches), so fall back to a scan.
            if hits.len() >= want {
                hits.sort_by(Hit::rank_cmp);
                hits.truncate(want);
                return (hits, SearchPath::Graph);
            }
        }
        (self.scan(&t, q), SearchPath::Exact)
    }

    fn hit(&self, s: &Slot, q: &PartitionQuery<'_>) -> Hit {
        let (score, distance) = exact_score(self.spec.metric, q.vector, &s.vector);
        Hit {
            id: s.id.clone(),
            score,
            distance,
            metadata: if q.with_metadata {
                s.metadata.clone()
            } else {
                None
            },
            vector: q.with_vector.then(|| s.vector.to_vec()),
        }
    }

    /// Exact top-k over every live slot passing the filter.
    fn scan(&self, t: &SlotTable, q: &PartitionQuery<'_>) -> Vec<Hit> {
        self.top_k(t, q, 0..t.slots.len())
    }

    /// Exact top-k over the given slots (live ones passing the filter), best first.
    fn top_k(
        &self,
        t: &SlotTable,
        q: &PartitionQuery<'_>,
        slots: impl Iterator<Item = usize>,
    ) -> Vec<Hit> {
        let mut heap: BinaryHeap<Ranked> = BinaryHeap::with_capacity(q.k + 1);
        for i in slots {
            let Some(s) = t.slots.get(i) else { continue };
            if !s.live || q.filter.is_some_and(|f| !f.matches(s.metadata.as_deref())) {
                continue;
            }
            let (score, _) = exact_score(self.spec.metric, q.vector, &s.vector);
            let cand = Ranked {
                score,
                id: s.id.clone(),
                slot: i,
            };
            if heap.len() < q.k {
                heap.push(cand);
            } else if heap.peek().is_some_and(|worst| cand < *worst) {
                heap.pop();
                heap.push(cand);
            }
        }
        let mut hits: Vec<Hit> = heap
            .into_iter()
            .map(|r| self.hit(&t.slots[r.slot], q))
            .collect();
        hits.sort_by(Hit::rank_cmp);
        hits
    }
}

/// Heap entry ordered so that the *worst* hit is the greatest (a max-heap keeps the worst on top).
struct Ranked {
    score: f32,
    id: Arc<str>,
    slot: usize,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then_with(|| self.id.cmp(&other.id))
    }
}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Ranked {}

/// Fraction of live points a filter matches, from an evenly spaced sample of slots.
fn estimate_selectivity(t: &SlotTable, f: &Filter) -> f64 {
    let step = (t.slots.len() / SELECTIVITY_SAMPLE).max(1);
    let (mut seen, mut hit) = (0usize, 0usize);
    for s in t.slots.iter().step_by(step).filter(|s| s.live) {
        seen += 1;
        if f.matches(s.metadata.as_deref()) {
            hit += 1;
        }
    }
    if seen == 0 {
        0.0
    } else {
        hit as f64 / seen as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(metric: Metric) -> PartitionSpec {
        PartitionSpec {
            metric,
            dimension: 4,
            hnsw: HnswParams {
                m: 16,
                ef_construction: 100,
                ef_search: 64,
            },
        }
    }

    fn upsert(id: &str, v: [f32; 4], tag: i64) -> Op {
        Op::Upsert {
            id: id.into(),
            vector: v.to_vec(),
            metadata: json!({ "tag": tag }).as_object().cloned().map(Arc::new),
        }
    }

    fn graph_tuning() -> SearchTuning {
        SearchTuning {
            view_max_delta: 0,
            exact_scan_max_points: 0,
            exact_scan_selectivity: 0.0,
        }
    }

    #[test]
    fn replaced_and_deleted_points_are_never_returned() {
        let p = Partition::new(spec(Metric::L2));
        let ops: Vec<(u64, Op)> = (0..200)
            .map(|i| {
                (
                    i as u64 + 1,
                    upsert(&format!("p{i}"), [i as f32, 0.0, 0.0, 0.0], i % 2),
                )
            })
            .collect();
        p.apply(&ops);
        p.apply(&[
            (300, Op::Delete { id: "p0".into() }),
            (301, upsert("p1", [1000.0, 0.0, 0.0, 0.0], 1)),
        ]);
        let q = [0.0f32; 4];
        let query = PartitionQuery {
            vector: &q,
            k: 3,
            ef: 64,
            filter: None,
            with_vector: false,
            with_metadata: true,
        };
        let (hits, path) = p.search(&query, &graph_tuning());
        assert_eq!(path, SearchPath::Graph);
        let ids: Vec<&str> = hits.iter().map(|h| h.id.as_ref()).collect();
        assert_eq!(ids, ["p2", "p3", "p4"]);
        assert_eq!(p.live(), 199);
        let compact = p.compacted();
        assert_eq!(compact.table().slots.len(), 199);
        let (hits2, _) = compact.search(&query, &graph_tuning());
        assert_eq!(hits2, hits);
        // The flat view answers the same, and covers points added after its freeze by a scan.
        p.refresh_view();
        p.apply(&[(302, upsert("fresh", [0.5, 0.0, 0.0, 0.0], 0))]);
        let view_tuning = SearchTuning {
            view_max_delta: 16,
            ..graph_tuning()
        };
        let (hits3, path) = p.search(&query, &view_tuning);
        assert_eq!(path, SearchPath::View);
        let ids: Vec<&str> = hits3.iter().map(|h| h.id.as_ref()).collect();
        assert_eq!(ids, ["fresh", "p2", "p3"]);
    }

    #[test]
    fn selective_filter_returns_exactly_k() {
        let p = Partition::new(spec(Metric::Cosine));
        let ops: Vec<(u64, Op)> = (0..500)
            .map(|i| {
                let x = i as f32;
                (
                    i as u64 + 1,
                    upsert(&format!("p{i}"), [1.0, x.sin(), x.cos(), 0.5], i % 100),
                )
            })
            .collect();
        p.apply(&ops);
        let f = Filter::parse(&json!({"tag": 7})).unwrap();
        let q = to_graph_form(Metric::Cosine, &[1.0, 0.0, 1.0, 0.0]);
        let query = PartitionQuery {
            vector: &q,
            k: 10,
            ef: 16,
            filter: Some(&f),
            with_vector: true,
            with_metadata: true,
        };
        for tuning in [
            graph_tuning(),
            SearchTuning {
                view_max_delta: 0,
                exact_scan_max_points: 0,
                exact_scan_selectivity: 0.05,
            },
        ] {
            let (hits, _) = p.search(&query, &tuning);
            assert_eq!(hits.len(), 5, "5 points carry tag 7");
            assert!(hits
                .iter()
                .all(|h| h.metadata.as_ref().unwrap()["tag"] == 7));
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        }
    }
}
