//! Our own HNSW graph on a flat layout (hnswlib's design): nodes contiguous by id (`slab`:
//! layer-0 list `[count, ids…]` of `2M + 1` words, scale word, vector), upper layers per node,
//! levels sampled as `⌊−ln U / ln M⌋`, neighbours chosen with the diversity heuristic (a
//! candidate is kept only when it is closer to the new node than to every neighbour already
//! kept), full reverse lists pruned by the same heuristic. Searching is in `graph_search.rs`,
//! snapshots in `graph_io.rs`.
//!
//! Why not hnsw_rs: its insert and search allocate per candidate and keep their lists behind
//! per-node locks of `Arc`s; measured, its build ran at 0.16–0.19× hnswlib's and its search
//! needed a frozen copy of the graph to be competitive (three copies of every vector).
//!
//! A node goes ABSENT → WRITING (claimed by one thread) → STAGED (vector written: readable, not
//! yet in the graph) → LINKING → its level (published). Staging and linking are separate so the
//! partition can acknowledge a write as soon as its vector is stored and link it later.
//! Concurrency as in hnswlib: links and searches run in parallel. Links are atomic words
//! (readers never lock; a list being rewritten may be seen half old, half new — every id in it is
//! a published node either way); writers of one list are serialised by a striped lock. A node's
//! own lists are written before it is published (release store of its level) and only then is
//! it linked from its neighbours. The whole storage sits behind one `RwLock` taken for reading
//! by everyone, and for writing only to grow it (by half, so that is rare).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use super::codes::CodeSlab;
use super::distance::{dot, graph_distance};
use super::slab::VectorSlab;
use crate::types::Metric;

#[path = "graph_io.rs"]
mod io;
#[path = "graph_search.rs"]
mod search;

/// The id holds no node.
const ABSENT: u8 = u8::MAX;
/// Claimed by a thread writing its vector.
const WRITING: u8 = u8::MAX - 1;
/// Vector written (readable), not linked.
const STAGED: u8 = u8::MAX - 2;
/// Being linked by one thread.
const LINKING: u8 = u8::MAX - 3;
/// Highest level sampled; states up to it are published nodes.
const MAX_LEVEL: u8 = 16;
/// No entry point yet.
const NO_ENTRY: u64 = u64::MAX;
/// Locks serialising writers of neighbour lists (by node id).
const STRIPES: usize = 1024;

/// Ordered distance for the heaps (distances are never NaN: the graph distances map NaN to
/// MAX).
#[derive(Clone, Copy)]
pub(super) struct D(pub(super) f32);
impl PartialEq for D {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for D {}
impl PartialOrd for D {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for D {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Never NaN (see above): plain comparisons are cheaper than `total_cmp`.
        if self.0 < other.0 {
            std::cmp::Ordering::Less
        } else if self.0 > other.0 {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    }
}

/// Graph parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphParams {
    pub dim: usize,
    pub m: usize,
    pub ef_construction: usize,
    /// Keep an int8 copy of every vector for searches to traverse (`codes.rs`).
    pub quantize: bool,
}

struct Storage {
    cap: usize,
    /// Per node: its layer-0 list (`2M + 1` words), scale and vector.
    vectors: VectorSlab,
    /// Per node: its int8 codes, when the graph quantises.
    codes: Option<CodeSlab>,
    /// Per node: its state (ABSENT, WRITING, STAGED, LINKING) or its level once published.
    levels: Box<[AtomicU8]>,
    /// Layers 1..=level of a node: `level` blocks of `m + 1` words (count, ids).
    upper: Box<[OnceLock<Box<[AtomicU32]>>]>,
}

impl Storage {
    fn state(&self, id: u32) -> u8 {
        self.levels
            .get(id as usize)
            .map_or(ABSENT, |l| l.load(Ordering::Acquire))
    }
}

pub struct Graph {
    p: GraphParams,
    m0: usize,
    level_mult: f64,
    metric: Metric,
    store: RwLock<Storage>,
    /// `id << 8 | level` of the entry point, or `NO_ENTRY`.
    entry: AtomicU64,
    nodes: AtomicUsize,
    stripes: Box<[Mutex<()>]>,
    seed: AtomicU64,
}

fn atomics<T>(n: usize, f: impl Fn() -> T) -> Box<[T]> {
    (0..n).map(|_| f()).collect()
}

impl Graph {
    pub fn new(p: GraphParams, metric: Metric) -> Graph {
        let m = p.m.max(2);
        Graph {
            p: GraphParams { m, ..p },
            m0: 2 * m,
            level_mult: 1.0 / (m as f64).ln(),
            metric,
            store: RwLock::new(Storage {
                cap: 0,
                vectors: VectorSlab::new(p.dim, 2 * m + 1, 0),
                codes: p.quantize.then(|| CodeSlab::new(p.dim, 0)),
                levels: Box::new([]),
                upper: Box::new([]),
            }),
            entry: AtomicU64::new(NO_ENTRY),
            nodes: AtomicUsize::new(0),
            stripes: atomics(STRIPES, || Mutex::new(())),
            seed: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
        }
    }

    pub fn params(&self) -> GraphParams {
        self.p
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// Published (linked) nodes.
    pub fn nodes(&self) -> usize {
        self.nodes.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.nodes() == 0
    }

    /// Read access: vectors of staged nodes and searches, under one lock hold.
    pub fn read(&self) -> GraphRead<'_> {
        GraphRead {
            g: self,
            s: self.store.read(),
        }
    }

    /// Whether `id` holds a published node.
    pub fn contains(&self, id: u32) -> bool {
        self.store.read().state(id) <= MAX_LEVEL
    }

    /// Ids with room allocated.
    pub fn capacity(&self) -> usize {
        self.store.read().cap
    }

    /// Bytes held: vectors with their lists and scales, states and upper layers.
    pub fn bytes(&self) -> usize {
        let s = self.store.read();
        let upper: usize = s
            .upper
            .iter()
            .map(|u| u.get().map_or(0, |b| b.len() * 4))
            .sum();
        let codes = s.codes.as_ref().map_or(0, CodeSlab::row_bytes);
        s.cap
            * (s.vectors.stride() * 4
                + codes
                + 1
                + std::mem::size_of::<OnceLock<Box<[AtomicU32]>>>())
            + upper
    }

    fn stride0(&self) -> usize {
        self.m0 + 1
    }

    fn random_level(&self) -> u8 {
        // splitmix64 over a shared counter: cheap and good enough for level sampling.
        let mut z = self
            .seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let u = ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        ((-u.ln() * self.level_mult) as u64).min(MAX_LEVEL as u64) as u8
    }

    /// Makes room for ids below `len` (write lock; existing content copied). Grows by half at
    /// least: rare, and at most a third of the room unused.
    pub fn reserve(&self, len: usize) {
        if len <= self.store.read().cap {
            return;
        }
        let mut s = self.store.write();
        if len <= s.cap {
            return;
        }
        let cap = len.max(s.cap + s.cap / 2).max(1024);
        let empty = Storage {
            cap: 0,
            vectors: VectorSlab::new(self.p.dim, self.stride0(), 0),
            codes: None,
            levels: Box::new([]),
            upper: Box::new([]),
        };
        let Storage {
            mut vectors,
            codes,
            levels,
            upper,
            ..
        } = std::mem::replace(&mut *s, empty);
        let mut lv = levels.into_vec();
        lv.resize_with(cap, || AtomicU8::new(ABSENT));
        let mut up = upper.into_vec();
        up.resize_with(cap, OnceLock::new);
        *s = Storage {
            cap,
            vectors: vectors.grown(cap),
            codes: codes.map(|mut c| c.grown(cap)),
            levels: lv.into_boxed_slice(),
            upper: up.into_boxed_slice(),
        };
    }

    /// Stores `vector` (the client's own; cosine keeps its inverse norm beside it) as node `id`,
    /// readable at once, not yet linked. False when the id holds a node already (a point's new
    /// version gets a new id) or the dimension is wrong.
    pub fn stage(&self, id: u32, vector: &[f32]) -> bool {
        if vector.len() != self.p.dim {
            return false;
        }
        let i = id as usize;
        self.reserve(i + 1);
        let s = self.store.read();
        if s.levels[i]
            .compare_exchange(ABSENT, WRITING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        let scale = match self.metric {
            Metric::Cosine => {
                let norm = dot(vector, vector).sqrt();
                if norm > 0.0 {
                    (1.0 / norm) as f32
                } else {
                    1.0
                }
            }
            Metric::L2 | Metric::Dot => 1.0,
        };
        // SAFETY: this thread holds the only claim on `i` (WRITING), and no reader reads a row
        // before it acquires the STAGED state stored below; see `VectorSlab::write`.
        #[allow(unsafe_code)]
        unsafe {
            s.vectors.write(i, vector, scale)
        };
        if let Some(codes) = &s.codes {
            // SAFETY: as for the row above: this thread holds the only claim on `i`.
            #[allow(unsafe_code)]
            unsafe {
                codes.write(i, vector, scale)
            };
        }
        s.levels[i].store(STAGED, Ordering::Release);
        true
    }

    /// Stages and links in one go.
    pub fn insert(&self, id: u32, vector: &[f32]) {
        if self.stage(id, vector) {
            self.link(id);
        }
    }

    /// Links staged node `id` into the graph and publishes it; anything else is left alone.
    pub fn link(&self, id: u32) {
        let i = id as usize;
        let s = self.store.read();
        let Some(state) = s.levels.get(i) else { return };
        if state
            .compare_exchange(STAGED, LINKING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let (q, qs) = (s.vectors.row(i), s.vectors.scale(i));
        let level = self.random_level();
        if level > 0 {
            let blocks = atomics(level as usize * (self.p.m + 1), || AtomicU32::new(0));
            let _ = s.upper[i].set(blocks);
        }
        let entry = self.entry.load(Ordering::Acquire);
        if entry == NO_ENTRY {
            s.levels[i].store(level, Ordering::Release);
            let mine = (u64::from(id) << 8) | u64::from(level);
            if self
                .entry
                .compare_exchange(NO_ENTRY, mine, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.nodes.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // Another node became the entry first: link this one like any other. Its level is
            // published already, but nothing links to it yet, so no reader reaches it.
        }
        let entry = self.entry.load(Ordering::Acquire);
        let (mut cur, top) = ((entry >> 8) as u32, (entry & 0xFF) as u8);
        let probe = self.exact_probe(&s, q, qs);
        let mut cur_d = probe.distance(cur);
        let mut layer = top;
        while layer > level {
            (cur, cur_d) = self.greedy(&s, &probe, cur, cur_d, layer);
            layer -= 1;
        }
        let mut chosen: Vec<Vec<u32>> = vec![Vec::new(); level as usize + 1];
        let mut from = vec![(cur_d, cur)];
        for l in (0..=layer.min(level)).rev() {
            let found = self.beam(&s, &probe, &from, self.p.ef_construction, l, &|_| true);
            chosen[l as usize] = self.select(&s, &found, self.p.m);
            from = found;
        }
        // Own lists first, then publish, then the reverse links that make it reachable.
        for (l, nbrs) in chosen.iter().enumerate() {
            self.set_list(&s, id, l as u8, nbrs);
        }
        s.levels[i].store(level, Ordering::Release);
        for (l, nbrs) in chosen.iter().enumerate() {
            for &nb in nbrs {
                self.add_reverse(&s, nb, id, l as u8);
            }
        }
        self.nodes.fetch_add(1, Ordering::Relaxed);
        // A higher node becomes the entry point.
        let mut seen = self.entry.load(Ordering::Acquire);
        while seen == NO_ENTRY || level > (seen & 0xFF) as u8 {
            let mine = (u64::from(id) << 8) | u64::from(level);
            match self
                .entry
                .compare_exchange(seen, mine, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => seen = now,
            }
        }
    }

    /// Node `id`'s whole list block on `layer`: the count word, then room for the ids.
    #[inline]
    fn block<'a>(&self, s: &'a Storage, id: u32, layer: u8) -> &'a [AtomicU32] {
        if layer == 0 {
            return s.vectors.links(id as usize);
        }
        let at = (layer as usize - 1) * (self.p.m + 1);
        s.upper[id as usize]
            .get()
            .and_then(|b| b.get(at..at + self.p.m + 1))
            .unwrap_or(&[])
    }

    /// The words of node `id`'s list on `layer` that its count covers.
    #[inline]
    fn words<'a>(&self, s: &'a Storage, id: u32, layer: u8) -> &'a [AtomicU32] {
        let Some((count, ids)) = self.block(s, id, layer).split_first() else {
            return &[];
        };
        &ids[..(count.load(Ordering::Acquire) as usize).min(ids.len())]
    }

    /// Node `id`'s list on `layer` (a snapshot of the atomic words).
    fn list(&self, s: &Storage, id: u32, layer: u8, out: &mut Vec<u32>) {
        out.clear();
        out.extend(
            self.words(s, id, layer)
                .iter()
                .map(|w| w.load(Ordering::Acquire)),
        );
    }

    fn set_list(&self, s: &Storage, id: u32, layer: u8, nbrs: &[u32]) {
        let Some((count, ids)) = self.block(s, id, layer).split_first() else {
            return;
        };
        let n = nbrs.len().min(ids.len());
        for (w, v) in ids.iter().zip(&nbrs[..n]) {
            w.store(*v, Ordering::Release);
        }
        count.store(n as u32, Ordering::Release);
    }

    /// Adds `new` to `nb`'s list on `layer`; a full list keeps the heuristic's choice.
    fn add_reverse(&self, s: &Storage, nb: u32, new: u32, layer: u8) {
        let max = if layer == 0 { self.m0 } else { self.p.m };
        let _writer = self.stripes[nb as usize % STRIPES].lock();
        let mut current = Vec::with_capacity(max + 1);
        self.list(s, nb, layer, &mut current);
        if current.contains(&new) {
            return;
        }
        if current.len() < max {
            current.push(new);
            self.set_list(s, nb, layer, &current);
            return;
        }
        current.push(new);
        let mut cands: Vec<(f32, u32)> = current.iter().map(|&c| (self.dn(s, nb, c), c)).collect();
        cands.sort_by(|a, b| a.0.total_cmp(&b.0));
        let kept = self.select(s, &cands, max);
        self.set_list(s, nb, layer, &kept);
    }

    /// Graph distance from `q` (dot products scaled by `qs`) to node `id`.
    #[inline]
    fn dq(&self, s: &Storage, q: &[f32], qs: f32, id: u32) -> f32 {
        let i = id as usize;
        graph_distance(self.metric, q, s.vectors.row(i), qs * s.vectors.scale(i))
    }

    /// Graph distance between two nodes.
    #[inline]
    fn dn(&self, s: &Storage, a: u32, b: u32) -> f32 {
        let i = a as usize;
        self.dq(s, s.vectors.row(i), s.vectors.scale(i), b)
    }

    /// The heuristic: from candidates sorted nearest first, keep one only when it is closer to
    /// the base than to every one kept before it; at most `max`.
    fn select(&self, s: &Storage, sorted: &[(f32, u32)], max: usize) -> Vec<u32> {
        let mut kept: Vec<u32> = Vec::with_capacity(max);
        for &(d, c) in sorted {
            if kept.len() >= max {
                break;
            }
            if kept.iter().all(|&k| self.dn(s, c, k) >= d) {
                kept.push(c);
            }
        }
        kept
    }

    /// Up to `k` nearest allowed nodes as (graph distance, id), nearest first (see
    /// `GraphRead::search`).
    pub fn search(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        allowed: &dyn Fn(u32) -> bool,
    ) -> Vec<(f32, u32)> {
        self.read().search(q, k, ef, allowed)
    }
}

/// The graph under one read hold of its storage (methods in `graph_search.rs`).
pub struct GraphRead<'a> {
    g: &'a Graph,
    s: RwLockReadGuard<'a, Storage>,
}

#[cfg(test)]
#[path = "graph_tests.rs"]
mod tests;
