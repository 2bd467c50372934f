//! Our own HNSW graph on a flat layout (hnswlib's design): vectors contiguous by node id
//! (`slab`), layer-0 neighbour lists in one array with a fixed stride (`[count, ids…]` of
//! `2M + 1` words), upper layers per node, levels sampled as `⌊−ln U / ln M⌋`, neighbours chosen
//! with the diversity heuristic (a candidate is kept only when it is closer to the new node than
//! to every neighbour already kept), full reverse lists pruned by the same heuristic.
//!
//! Why not hnsw_rs: its insert and search allocate per candidate and keep their lists behind
//! per-node locks of `Arc`s; measured, its build ran at 0.16–0.19× hnswlib's and its search
//! needed a frozen copy of the graph to be competitive (three copies of every vector).
//!
//! Concurrency as in hnswlib: inserts and searches run in parallel. Links are atomic words
//! (readers never lock; a list being rewritten may be seen half old, half new — every id in it is
//! a published node either way); writers of one list are serialised by a striped lock. A node is
//! claimed (compare-and-swap on its level), its vector written, its own lists written, then it is
//! published (release store of its level) and only then linked from its neighbours. The whole
//! storage sits behind one `RwLock` taken for reading by everyone, and for writing only to grow
//! it (capacity doubles, so that is rare).

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

use parking_lot::{Mutex, RwLock};

use super::distance::{graph_distance, SimdDistance};
use super::slab::VectorSlab;
use crate::types::Metric;

/// A level no node reaches: the id holds no node.
const ABSENT: u8 = u8::MAX;
/// Claimed by an insert that has not published the node yet.
const CLAIMED: u8 = u8::MAX - 1;
/// Highest level sampled.
const MAX_LEVEL: u8 = 16;
/// No entry point yet.
const NO_ENTRY: u64 = u64::MAX;
/// Locks serialising writers of neighbour lists (by node id).
const STRIPES: usize = 1024;

/// Ordered distance for the heaps (distances are never NaN: the graph distances map NaN to
/// MAX). Shared with `view.rs`.
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

thread_local! {
    /// Per-thread visited stamps: `stamps[i] == epoch` means visited in this search.
    static VISITED: RefCell<(Vec<u32>, u32)> = const { RefCell::new((Vec::new(), 0)) };
}

/// Graph parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphParams {
    pub dim: usize,
    pub m: usize,
    pub ef_construction: usize,
}

struct Storage {
    cap: usize,
    /// Per node: its layer-0 list (`2M + 1` words) and its vector.
    vectors: VectorSlab,
    levels: Box<[AtomicU8]>,
    /// Layers 1..=level of a node: `level` blocks of `m + 1` words (count, ids).
    upper: Box<[OnceLock<Box<[AtomicU32]>>]>,
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
    pub fn new(p: GraphParams, dist: SimdDistance) -> Graph {
        let m = p.m.max(2);
        Graph {
            p: GraphParams { m, ..p },
            m0: 2 * m,
            level_mult: 1.0 / (m as f64).ln(),
            metric: dist.metric,
            store: RwLock::new(Storage {
                cap: 0,
                vectors: VectorSlab::new(p.dim, 2 * m + 1, 0),
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

    /// Nodes in the graph.
    pub fn nodes(&self) -> usize {
        self.nodes.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.nodes() == 0
    }

    /// Whether `id` holds a published node.
    pub fn contains(&self, id: u32) -> bool {
        let s = self.store.read();
        s.levels
            .get(id as usize)
            .is_some_and(|l| l.load(Ordering::Acquire) < CLAIMED)
    }

    /// Bytes held: vectors, layer-0 lists, levels and upper layers.
    pub fn bytes(&self) -> usize {
        let s = self.store.read();
        let upper: usize = s
            .upper
            .iter()
            .map(|u| u.get().map_or(0, |b| b.len() * 4))
            .sum();
        s.cap
            * (self.p.dim * 4
                + self.stride0() * 4
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

    /// Makes room for ids below `len` (write lock; existing content copied).
    fn grow(&self, len: usize) {
        let mut s = self.store.write();
        if len <= s.cap {
            return;
        }
        let cap = len.max(s.cap * 2).max(1024);
        let old = std::mem::replace(
            &mut *s,
            Storage {
                cap: 0,
                vectors: VectorSlab::new(self.p.dim, self.stride0(), 0),
                levels: Box::new([]),
                upper: Box::new([]),
            },
        );
        let Storage {
            mut vectors,
            levels,
            upper,
            ..
        } = old;
        let mut lv = levels.into_vec();
        lv.resize_with(cap, || AtomicU8::new(ABSENT));
        let mut up = upper.into_vec();
        up.resize_with(cap, OnceLock::new);
        *s = Storage {
            cap,
            vectors: vectors.grown(cap),
            levels: lv.into_boxed_slice(),
            upper: up.into_boxed_slice(),
        };
    }

    /// Inserts `vector` (graph form) as node `id`. An id that already holds a node is ignored:
    /// a point's new version gets a new id.
    pub fn insert(&self, id: u32, vector: &[f32]) {
        if vector.len() != self.p.dim {
            return;
        }
        let i = id as usize;
        if i >= self.store.read().cap {
            self.grow(i + 1);
        }
        let s = self.store.read();
        // Claim the id: only this thread writes its vector and lists.
        if s.levels[i]
            .compare_exchange(ABSENT, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        // SAFETY: this thread holds the only claim on `i`, and no link, entry point or level
        // publishes it before the release store below; see `VectorSlab::write`.
        #[allow(unsafe_code)]
        unsafe {
            s.vectors.write(i, vector)
        };
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
            // Another insert became the entry first: link this node like any other. Its level
            // is published already, but nothing links to it yet, so no reader reaches it.
        }
        let entry = self.entry.load(Ordering::Acquire);
        let (mut cur, top) = ((entry >> 8) as u32, (entry & 0xFF) as u8);
        let mut cur_d = self.d(&s, vector, cur);
        let mut layer = top;
        while layer > level {
            (cur, cur_d) = self.greedy(&s, vector, cur, cur_d, layer);
            layer -= 1;
        }
        let mut chosen: Vec<Vec<u32>> = vec![Vec::new(); level as usize + 1];
        let mut from = vec![(cur_d, cur)];
        for l in (0..=layer.min(level)).rev() {
            let found = self.beam(&s, vector, &from, self.p.ef_construction, l, &|_| true);
            chosen[l as usize] = self.select(&found, self.p.m, &|c| s.vectors.row(c as usize));
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
        let base = s.vectors.row(nb as usize);
        current.push(new);
        let mut cands: Vec<(f32, u32)> = current
            .iter()
            .map(|&c| (self.dist(base, s.vectors.row(c as usize)), c))
            .collect();
        cands.sort_by(|a, b| a.0.total_cmp(&b.0));
        let kept = self.select(&cands, max, &|c| s.vectors.row(c as usize));
        self.set_list(s, nb, layer, &kept);
    }

    #[inline]
    fn dist(&self, a: &[f32], b: &[f32]) -> f32 {
        graph_distance(self.metric, a, b)
    }

    fn d(&self, s: &Storage, q: &[f32], id: u32) -> f32 {
        self.dist(q, s.vectors.row(id as usize))
    }

    /// Greedy walk on one layer: the nearest node reachable by always improving.
    fn greedy(
        &self,
        s: &Storage,
        q: &[f32],
        mut cur: u32,
        mut cur_d: f32,
        layer: u8,
    ) -> (u32, f32) {
        let mut nbrs = Vec::with_capacity(self.p.m + 1);
        loop {
            let mut moved = false;
            self.list(s, cur, layer, &mut nbrs);
            for &nb in &nbrs {
                let d = self.d(s, q, nb);
                if d < cur_d {
                    (cur, cur_d, moved) = (nb, d, true);
                }
            }
            if !moved {
                return (cur, cur_d);
            }
        }
    }

    /// The heuristic: from candidates sorted nearest first, keep one only when it is closer to
    /// the base than to every one kept before it; at most `max`.
    fn select<'a>(
        &self,
        sorted: &[(f32, u32)],
        max: usize,
        vec_of: &dyn Fn(u32) -> &'a [f32],
    ) -> Vec<u32> {
        let mut kept: Vec<u32> = Vec::with_capacity(max);
        for &(d, c) in sorted {
            if kept.len() >= max {
                break;
            }
            let cv = vec_of(c);
            if kept.iter().all(|&k| self.dist(cv, vec_of(k)) >= d) {
                kept.push(c);
            }
        }
        kept
    }

    /// Beam search on one layer from `entry`: up to `ef` nearest nodes, sorted nearest first.
    /// Only nodes passing `allowed` enter the results; every node is walked through.
    fn beam(
        &self,
        s: &Storage,
        q: &[f32],
        entry: &[(f32, u32)],
        ef: usize,
        layer: u8,
        allowed: &dyn Fn(u32) -> bool,
    ) -> Vec<(f32, u32)> {
        VISITED.with(|cell| {
            let mut guard = cell.borrow_mut();
            let (stamps, epoch) = &mut *guard;
            if stamps.len() < s.cap {
                stamps.resize(s.cap, 0);
            }
            *epoch = epoch.wrapping_add(1);
            if *epoch == 0 {
                stamps.iter_mut().for_each(|x| *x = 0);
                *epoch = 1;
            }
            let epoch = *epoch;
            let mut candidates: BinaryHeap<Reverse<(D, u32)>> = BinaryHeap::with_capacity(ef * 2);
            let mut results: BinaryHeap<(D, u32)> = BinaryHeap::with_capacity(ef + 1);
            for &(d, e) in entry {
                stamps[e as usize] = epoch;
                candidates.push(Reverse((D(d), e)));
                if allowed(e) {
                    results.push((D(d), e));
                    if results.len() > ef {
                        results.pop();
                    }
                }
            }
            while let Some(Reverse((D(cd), c))) = candidates.pop() {
                if results.len() >= ef && results.peek().is_some_and(|(D(w), _)| cd > *w) {
                    break;
                }
                let words = self.words(s, c, layer);
                for w in words {
                    let nb = w.load(Ordering::Acquire) as usize;
                    if stamps.get(nb).is_some_and(|st| *st != epoch) {
                        s.vectors.prefetch(nb);
                    }
                }
                for w in words {
                    let nb = w.load(Ordering::Acquire);
                    let stamp = &mut stamps[nb as usize];
                    if *stamp == epoch {
                        continue;
                    }
                    *stamp = epoch;
                    let d = self.d(s, q, nb);
                    let worst = results.peek().map(|(D(w), _)| *w);
                    if results.len() < ef || worst.is_some_and(|w| d < w) {
                        candidates.push(Reverse((D(d), nb)));
                        if allowed(nb) {
                            results.push((D(d), nb));
                            if results.len() > ef {
                                results.pop();
                            }
                        }
                    }
                }
            }
            let mut out: Vec<(f32, u32)> = results.into_iter().map(|(D(d), i)| (d, i)).collect();
            out.sort_by(|a, b| a.0.total_cmp(&b.0));
            out
        })
    }

    /// Up to `k` nearest allowed nodes as (graph distance, id), nearest first; `ef` bounds the
    /// beam (raised to `k`).
    pub fn search(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        allowed: &dyn Fn(u32) -> bool,
    ) -> Vec<(f32, u32)> {
        if q.len() != self.p.dim {
            return Vec::new();
        }
        let s = self.store.read();
        let entry = self.entry.load(Ordering::Acquire);
        if entry == NO_ENTRY {
            return Vec::new();
        }
        let (mut cur, top) = ((entry >> 8) as u32, (entry & 0xFF) as u8);
        let mut cur_d = self.d(&s, q, cur);
        for layer in (1..=top).rev() {
            (cur, cur_d) = self.greedy(&s, q, cur, cur_d, layer);
        }
        let mut out = self.beam(&s, q, &[(cur_d, cur)], ef.max(k), 0, allowed);
        out.truncate(k);
        out
    }
}

#[cfg(test)]
#[path = "graph_tests.rs"]
mod tests;
