//! A read-optimised copy of a partition's graph, searched by our own code.
//!
//! hnsw_rs builds the graph well enough, but its search allocates an `Arc` per candidate and
//! tracks visited nodes in a hash map; that bookkeeping is most of its query time (measured:
//! 5–8× behind hnswlib at equal recall). A `GraphView` freezes the graph into flat arrays —
//! vectors contiguous by slot, neighbour lists in CSR form per layer — and searches it with a
//! generation-stamped visited array reused per thread. It is refreshed in the background as the
//! graph grows; points inserted since the freeze (the *delta*) are scanned exactly, and past a
//! bound the partition falls back to hnsw_rs's own search.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use hnsw_rs::prelude::{Distance, Hnsw};

use super::distance::SimdDistance;
use super::graph::D;

/// A neighbour list layer in CSR form: node `i`'s neighbours are `nbrs[off[i]..off[i+1]]`.
struct Layer {
    off: Vec<u32>,
    nbrs: Vec<u32>,
}

impl Layer {
    fn of(&self, i: u32) -> &[u32] {
        let i = i as usize;
        match (self.off.get(i), self.off.get(i + 1)) {
            (Some(a), Some(b)) => &self.nbrs[*a as usize..*b as usize],
            _ => &[],
        }
    }
}

pub struct GraphView {
    dim: usize,
    /// Slots `0..n` are covered; slot `i`'s graph-form vector is `vectors[i*dim..(i+1)*dim]`.
    n: usize,
    vectors: Vec<f32>,
    /// Slots below `n` that were not in the graph at freeze time (a slot is pushed before its
    /// graph insert); searches scan them exactly.
    missing: Vec<u32>,
    layers: Vec<Layer>,
    entry: Option<u32>,
    dist: SimdDistance,
}

thread_local! {
    /// Per-thread visited stamps: `stamps[i] == epoch` means visited in this search.
    static VISITED: RefCell<(Vec<u32>, u32)> = const { RefCell::new((Vec::new(), 0)) };
}

impl GraphView {
    /// Freezes `graph` (which may be inserted into concurrently: what is seen is used, edges to
    /// nodes beyond `slots` are dropped). `slots` is the slot count at the start of the freeze;
    /// `extra_links`: how many restored reverse links layer 0 may add beyond its longest list.
    pub fn freeze(
        graph: &Hnsw<'static, f32, SimdDistance>,
        slots: usize,
        dist: SimdDistance,
        extra_links: usize,
    ) -> Option<GraphView> {
        let n = slots;
        let mut dim = 0usize;
        let mut vectors: Vec<f32> = Vec::new();
        let mut present = vec![false; n];
        // Per layer, per node: neighbour ids (only nodes of that layer have entries).
        let mut lists: Vec<Vec<Vec<u32>>> = vec![vec![Vec::new(); n]];
        let mut entry: Option<(u8, u32)> = None;
        for point in graph.get_point_indexation() {
            let id = point.get_origin_id();
            if id >= n {
                continue;
            }
            let v = point.get_v();
            if dim == 0 {
                dim = v.len();
                vectors = vec![0.0; n * dim];
            }
            if v.len() != dim {
                return None;
            }
            vectors[id * dim..(id + 1) * dim].copy_from_slice(v);
            present[id] = true;
            let level = point.get_point_id().0;
            if entry.is_none_or(|(l, _)| level > l) {
                entry = Some((level, id as u32));
            }
            for (layer, nbrs) in point
                .get_neighborhood_id()
                .into_iter()
                .enumerate()
                .take(level as usize + 1)
            {
                while lists.len() <= layer {
                    lists.push(vec![Vec::new(); n]);
                }
                lists[layer][id] = nbrs
                    .iter()
                    .map(|x| x.d_id)
                    .filter(|d| *d < n)
                    .map(|d| d as u32)
                    .collect();
            }
        }
        if dim == 0 {
            return None;
        }
        // hnsw_rs prunes a full neighbour list by distance alone, which drops many reverse
        // links; restore them on layer 0 (up to `extra_links` beyond the longest list) so the
        // graph is closer to undirected and a search reaches more of it per ef. Measured on
        // 100k×128 l2: recall@10 at ef 16 went from 0.77 to 0.94 (hnswlib: 0.925).
        if extra_links > 0 {
            let extra = extra_links;
            let longest = lists[0].iter().map(Vec::len).max().unwrap_or(0);
            let cap = longest + extra;
            let forward: Vec<Vec<u32>> = lists[0].clone();
            for (u, nbrs) in forward.iter().enumerate() {
                for &v in nbrs {
                    let back = &mut lists[0][v as usize];
                    if back.len() < cap && !back.contains(&(u as u32)) {
                        back.push(u as u32);
                    }
                }
            }
        }
        let layers = lists
            .into_iter()
            .map(|per_node| {
                let mut off = Vec::with_capacity(n + 1);
                let mut nbrs = Vec::new();
                off.push(0u32);
                for l in per_node {
                    nbrs.extend_from_slice(&l);
                    off.push(nbrs.len() as u32);
                }
                Layer { off, nbrs }
            })
            .collect();
        let missing = (0..n as u32).filter(|i| !present[*i as usize]).collect();
        Some(GraphView {
            dim,
            n,
            vectors,
            missing,
            layers,
            entry: entry.map(|(_, id)| id),
            dist,
        })
    }

    /// Slots covered by the view.
    pub fn covered(&self) -> usize {
        self.n
    }

    /// Covered slots that are not in the view's graph.
    pub fn missing(&self) -> &[u32] {
        &self.missing
    }

    fn vector(&self, i: u32) -> &[f32] {
        let i = i as usize;
        &self.vectors[i * self.dim..(i + 1) * self.dim]
    }

    fn d(&self, q: &[f32], i: u32) -> f32 {
        self.dist.eval(q, self.vector(i))
    }

    /// Up to `k` nearest allowed slots as (graph distance, slot), nearest first. `ef` bounds the
    /// beam (raised to `k`).
    pub fn search(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        allowed: &dyn Fn(usize) -> bool,
    ) -> Vec<(f32, usize)> {
        let Some(mut cur) = self.entry else {
            return Vec::new();
        };
        if q.len() != self.dim {
            return Vec::new();
        }
        let ef = ef.max(k);
        // Greedy descent through the upper layers.
        let mut cur_d = self.d(q, cur);
        for layer in self.layers.iter().skip(1).rev() {
            loop {
                let mut moved = false;
                for &nb in layer.of(cur) {
                    let d = self.d(q, nb);
                    if d < cur_d {
                        cur_d = d;
                        cur = nb;
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        let base = &self.layers[0];
        VISITED.with(|cell| {
            let mut guard = cell.borrow_mut();
            let (stamps, epoch) = &mut *guard;
            if stamps.len() < self.n {
                stamps.resize(self.n, 0);
            }
            *epoch = epoch.wrapping_add(1);
            if *epoch == 0 {
                stamps.iter_mut().for_each(|s| *s = 0);
                *epoch = 1;
            }
            let epoch = *epoch;
            let mut candidates: BinaryHeap<Reverse<(D, u32)>> = BinaryHeap::with_capacity(ef * 2);
            let mut results: BinaryHeap<(D, u32)> = BinaryHeap::with_capacity(ef + 1);
            stamps[cur as usize] = epoch;
            candidates.push(Reverse((D(cur_d), cur)));
            if allowed(cur as usize) {
                results.push((D(cur_d), cur));
            }
            while let Some(Reverse((D(cd), c))) = candidates.pop() {
                if results.len() >= ef && results.peek().is_some_and(|(D(w), _)| cd > *w) {
                    break;
                }
                for &nb in base.of(c) {
                    let s = &mut stamps[nb as usize];
                    if *s == epoch {
                        continue;
                    }
                    *s = epoch;
                    let d = self.d(q, nb);
                    let worst = results.peek().map(|(D(w), _)| *w);
                    if results.len() < ef || worst.is_some_and(|w| d < w) {
                        candidates.push(Reverse((D(d), nb)));
                        if allowed(nb as usize) {
                            results.push((D(d), nb));
                            if results.len() > ef {
                                results.pop();
                            }
                        }
                    }
                }
            }
            let mut out: Vec<(f32, usize)> = results
                .into_iter()
                .map(|(D(d), i)| (d, i as usize))
                .collect();
            out.sort_by(|a, b| a.0.total_cmp(&b.0));
            out.truncate(k);
            out
        })
    }
}
