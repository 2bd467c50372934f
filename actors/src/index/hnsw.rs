//! One HNSW partition: our graph (`graph.rs`) plus the slot table that maps its node ids to
//! points (`slots.rs`).
//!
//! A write is applied in two steps. `apply` stores it at once: tombstones, new slots, and each
//! new vector *staged* in the graph (readable, not linked) — enough for the shard to acknowledge
//! it, and every search sees it at once: slots not yet linked are scanned exactly. `link_pending`
//! then links staged nodes in the background (the shard's writer does it between batches, with
//! every build thread), and holds the write path back once more than `index.max_unindexed`
//! wait, so the exact scan stays bounded. Searches hold the slot table's read lock and one read
//! hold of the graph for their duration (in that order, as writers do); writers take the table's
//! write lock only to flip slots and stage, never while linking.

use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::distance::exact_score;
use super::filter::Filter;
use super::graph::{Graph, GraphParams, GraphRead};
pub use super::slots::{Slot, SlotTable};
use crate::types::{Hit, HnswParams, Metadata, Metric, Point, Quantization};

/// Fewer staged nodes than this are linked on the calling thread alone.
const PARALLEL_LINK_MIN: usize = 64;

/// What a partition is: metric, dimension and graph parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSpec {
    pub metric: Metric,
    pub dimension: usize,
    pub hnsw: HnswParams,
}

impl PartitionSpec {
    pub fn graph_params(&self) -> GraphParams {
        GraphParams {
            dim: self.dimension,
            m: self.hnsw.m,
            ef_construction: self.hnsw.ef_construction,
            quantize: self.hnsw.quantization == Quantization::Int8,
        }
    }
}

/// Knobs of the search path, from config.
#[derive(Debug, Clone, Copy)]
pub struct SearchTuning {
    /// Partitions with at most this many live points are scanned exactly.
    pub exact_scan_max_points: usize,
    /// Filters estimated to match less than this fraction of points are answered by an exact scan.
    pub exact_scan_selectivity: f64,
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
    /// The graph (plus an exact scan of the slots not linked yet).
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
    graph: Graph,
    table: RwLock<SlotTable>,
    /// Every slot below this is linked into the graph; searches scan the ones above exactly.
    linked: AtomicUsize,
    /// Serialises linkers, so two never take the same range.
    linking: Mutex<()>,
}

impl Partition {
    pub fn new(spec: PartitionSpec) -> Partition {
        Partition::from_parts(
            spec,
            Graph::new(spec.graph_params(), spec.metric),
            SlotTable::default(),
        )
    }

    /// A partition from a loaded graph and its slot table (a snapshot). Slots from the first
    /// one the graph has not published on count as not linked.
    pub fn from_parts(spec: PartitionSpec, graph: Graph, table: SlotTable) -> Partition {
        let linked = {
            let g = graph.read();
            (0..table.slots.len())
                .find(|i| !g.contains(*i as u32))
                .unwrap_or(table.slots.len())
        };
        Partition {
            spec,
            graph,
            table: RwLock::new(table),
            linked: AtomicUsize::new(linked),
            linking: Mutex::new(()),
        }
    }

    /// A graph for `points` (slot, vector), linked by `threads` threads.
    pub fn build(spec: PartitionSpec, points: Vec<(Slot, Vec<f32>)>, threads: usize) -> Partition {
        let graph = Graph::new(spec.graph_params(), spec.metric);
        graph.reserve(points.len());
        let mut slots = Vec::with_capacity(points.len());
        for (i, (slot, vector)) in points.into_iter().enumerate() {
            assert!(
                graph.stage(i as u32, &vector),
                "slot {i} could not be staged"
            );
            slots.push(slot);
        }
        let p = Partition::from_parts(spec, graph, SlotTable::from_slots(slots));
        p.link_all(threads);
        p
    }

    /// A compacted copy: live points only, renumbered, with a freshly built graph.
    pub fn compacted(&self, threads: usize) -> Partition {
        let points: Vec<(Slot, Vec<f32>)> = {
            let t = self.table.read();
            let g = self.graph.read();
            t.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.live)
                .filter_map(|(i, s)| Some((s.clone(), g.vector(i as u32)?.to_vec())))
                .collect()
        };
        Partition::build(self.spec, points, threads)
    }

    pub fn spec(&self) -> &PartitionSpec {
        &self.spec
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Read access to the slot table (snapshots, counts).
    pub fn table(&self) -> parking_lot::RwLockReadGuard<'_, SlotTable> {
        self.table.read()
    }

    pub fn live(&self) -> usize {
        self.table.read().live()
    }

    /// Slots stored but not linked into the graph yet.
    pub fn unindexed(&self) -> usize {
        let slots = self.table.read().slots.len();
        slots.saturating_sub(self.linked.load(Ordering::Acquire))
    }

    pub fn get(&self, id: &str) -> Option<Point> {
        let t = self.table.read();
        let g = self.graph.read();
        let i = t.slot_of(id)?;
        let s = &t.slots[i as usize];
        Some(Point {
            id: s.id.to_string(),
            vector: g.vector(i)?.to_vec(),
            metadata: s.metadata.as_deref().cloned(),
        })
    }

    /// A page of live points in id order (bytewise), after `after`: each with the sequence
    /// number of the write that made its current version.
    pub fn page(&self, after: Option<&str>, limit: usize) -> Vec<(Point, u64)> {
        let t = self.table.read();
        let g = self.graph.read();
        t.page_after(after, limit)
            .into_iter()
            .filter_map(|i| {
                let s = &t.slots[i as usize];
                let point = Point {
                    id: s.id.to_string(),
                    vector: g.vector(i)?.to_vec(),
                    metadata: s.metadata.as_deref().cloned(),
                };
                Some((point, s.version))
            })
            .collect()
    }

    /// The vector of a live point.
    pub fn get_vector(&self, id: &str) -> Option<Vec<f32>> {
        let t = self.table.read();
        let g = self.graph.read();
        g.vector(t.slot_of(id)?).map(<[f32]>::to_vec)
    }

    /// Current metadata of a live point.
    pub fn metadata_of(&self, id: &str) -> Option<Option<Arc<Metadata>>> {
        self.table.read().get(id).map(|s| s.metadata.clone())
    }

    /// Applies ops in order under one short write lock: slots change, new vectors are staged
    /// (visible to searches at once); linking them is `link_pending`'s job.
    pub fn apply(&self, ops: &[(u64, Op)]) {
        let mut t = self.table.write();
        for (seq, op) in ops {
            match op {
                Op::Upsert {
                    id,
                    vector,
                    metadata,
                } => {
                    assert_eq!(
                        vector.len(),
                        self.spec.dimension,
                        "a vector of the wrong dimension reached the partition"
                    );
                    t.tombstone(id);
                    let slot = t.slots.len();
                    self.graph.reserve(slot + 1);
                    assert!(
                        self.graph.stage(slot as u32, vector),
                        "slot {slot} is taken in the graph"
                    );
                    t.push(Slot {
                        id: Arc::from(id.as_str()),
                        metadata: metadata.clone(),
                        version: *seq,
                        live: true,
                    });
                }
                Op::Delete { id } => {
                    t.tombstone(id);
                }
                Op::SetMetadata { id, metadata } => {
                    if let Some(s) = t.slot_mut(id) {
                        s.metadata = metadata.clone();
                        s.version = *seq;
                    }
                }
            }
        }
    }

    /// Links up to `max` staged slots (oldest first) with `threads` threads; returns how many.
    pub fn link_pending(&self, threads: usize, max: usize) -> usize {
        let _only_linker = self.linking.lock();
        let from = self.linked.load(Ordering::Acquire);
        let to = self.table.read().slots.len().min(from.saturating_add(max));
        if to <= from {
            return 0;
        }
        let next = AtomicUsize::new(from);
        let work = || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= to {
                break;
            }
            self.graph.link(i as u32);
        };
        if threads <= 1 || to - from < PARALLEL_LINK_MIN {
            work();
        } else {
            std::thread::scope(|s| {
                for _ in 1..threads {
                    s.spawn(work);
                }
                work();
            });
        }
        self.linked.store(to, Ordering::Release);
        to - from
    }

    /// Links every staged slot.
    pub fn link_all(&self, threads: usize) {
        while self.link_pending(threads, usize::MAX) > 0 {}
    }

    /// Whether an unfiltered search goes through the graph (a partition this small is scanned).
    pub fn searches_graph(&self, tuning: &SearchTuning) -> bool {
        self.table.read().live() > tuning.exact_scan_max_points
    }

    /// Top-k of this partition: exactly `min(k, live points passing the filter)` hits, best first.
    pub fn search(&self, q: &PartitionQuery<'_>, tuning: &SearchTuning) -> (Vec<Hit>, SearchPath) {
        let t = self.table.read();
        let g = self.graph.read();
        let want = q.k.min(t.live());
        if want == 0 {
            return (Vec::new(), SearchPath::Exact);
        }
        let exact = t.live() <= tuning.exact_scan_max_points
            || q.filter
                .is_some_and(|f| t.selectivity(f) < tuning.exact_scan_selectivity);
        if !exact {
            // Read before the graph search: every slot below it is reachable in the graph,
            // every slot above is scanned (one linked meanwhile may be found twice: skipped).
            let linked = self.linked.load(Ordering::Acquire).min(t.slots.len());
            let allowed = |i: u32| t.admits(i as usize, q.filter);
            // Without a filter or tombstones every node reached is a live point: skip the slot
            // lookup (a cache miss per candidate otherwise).
            let everyone = |_: u32| true;
            let allowed: &dyn Fn(u32) -> bool = if q.filter.is_none() && t.dead() == 0 {
                &everyone
            } else {
                &allowed
            };
            let found = g.search(q.vector, q.k, q.ef.max(q.k), allowed);
            let mut hits: Vec<Hit> = found
                .iter()
                .filter_map(|(_, i)| self.hit(&t, &g, *i as usize, q))
                .collect();
            if linked < t.slots.len() {
                let unlinked = (linked..t.slots.len())
                    .filter(|i| !found.iter().any(|(_, f)| *f as usize == *i));
                hits.extend(self.top_k(&t, &g, q, unlinked));
            }
            // A graph search can come back short (a very selective filter); the contract wants
            // exactly min(k, matches), so fall back to a scan.
            if hits.len() >= want {
                hits.sort_by(Hit::rank_cmp);
                hits.truncate(want);
                return (hits, SearchPath::Graph);
            }
        }
        (self.top_k(&t, &g, q, 0..t.slots.len()), SearchPath::Exact)
    }

    fn hit(
        &self,
        t: &SlotTable,
        g: &GraphRead<'_>,
        i: usize,
        q: &PartitionQuery<'_>,
    ) -> Option<Hit> {
        let s = t.slots.get(i)?;
        let v = g.vector(i as u32)?;
        let (score, distance) = exact_score(self.spec.metric, q.vector, v);
        Some(Hit {
            id: s.id.clone(),
            score,
            distance,
            metadata: if q.with_metadata {
                s.metadata.clone()
            } else {
                None
            },
            vector: q.with_vector.then(|| v.to_vec()),
        })
    }

    /// Exact top-k over the given slots (live ones passing the filter), best first.
    fn top_k(
        &self,
        t: &SlotTable,
        g: &GraphRead<'_>,
        q: &PartitionQuery<'_>,
        slots: impl Iterator<Item = usize>,
    ) -> Vec<Hit> {
        let mut heap: BinaryHeap<Ranked> = BinaryHeap::with_capacity(q.k + 1);
        for i in slots {
            if !t.admits(i, q.filter) {
                continue;
            }
            let Some(v) = g.vector(i as u32) else {
                continue;
            };
            let (score, _) = exact_score(self.spec.metric, q.vector, v);
            let cand = Ranked {
                score,
                id: t.slots[i].id.clone(),
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
            .filter_map(|r| self.hit(t, g, r.slot, q))
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

#[cfg(test)]
#[path = "hnsw_tests.rs"]
mod tests;
