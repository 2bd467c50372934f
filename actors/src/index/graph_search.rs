//! The graph's read side: greedy descent through the upper layers, the beam search of one
//! layer (shared with linking, which searches for a new node's neighbours), and `GraphRead`,
//! one hold of the storage lock for a whole query (vectors of staged nodes included), so a
//! caller never takes the lock twice (parking_lot's fair lock can deadlock a thread that reads
//! recursively while a writer waits).

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;

use super::{Graph, GraphRead, Storage, D, MAX_LEVEL, NO_ENTRY, STAGED};
use crate::index::codes::{code_distance, CodeSlab};
use crate::index::distance::graph_distance;
use crate::types::Metric;

/// A quantised search re-ranks this many times `k` of its walk's best with the f32 rows.
const RERANK_FACTOR: usize = 3;

thread_local! {
    /// Per-thread visited stamps: `stamps[i] == epoch` means visited in this search.
    static VISITED: RefCell<(Vec<u32>, u32)> = const { RefCell::new((Vec::new(), 0)) };
}

/// How one walk measures the distance from its query to a node: from the f32 rows (linking,
/// and searches of a graph without codes) or from the int8 codes (searches of a quantised
/// graph, re-ranked with the rows afterwards).
pub(super) struct Probe<'a> {
    s: &'a Storage,
    metric: Metric,
    /// The query in graph form.
    q: &'a [f32],
    /// Multiplies the query's dot products (a linked node's own inverse norm; 1 for queries).
    qs: f32,
    /// The query's squared length (l2 over codes).
    q_norm2: f32,
    codes: Option<&'a CodeSlab>,
}

impl Probe<'_> {
    #[inline]
    pub(super) fn distance(&self, id: u32) -> f32 {
        let i = id as usize;
        match self.codes {
            Some(c) => code_distance(self.metric, self.q, self.q_norm2, c.row(i)),
            None => graph_distance(
                self.metric,
                self.q,
                self.s.vectors.row(i),
                self.qs * self.s.vectors.scale(i),
            ),
        }
    }

    #[inline]
    fn prefetch(&self, id: u32) {
        match self.codes {
            Some(c) => c.prefetch(id as usize),
            None => self.s.vectors.prefetch(id as usize),
        }
    }
}

impl GraphRead<'_> {
    /// Node `id`'s vector, once staged (as its writer gave it).
    pub fn vector(&self, id: u32) -> Option<&[f32]> {
        (self.s.state(id) <= STAGED).then(|| self.s.vectors.row(id as usize))
    }

    /// Whether `id` holds a published node.
    pub fn contains(&self, id: u32) -> bool {
        self.s.state(id) <= MAX_LEVEL
    }

    /// Up to `k` nearest allowed nodes as (graph distance, id), nearest first; `ef` bounds the
    /// beam (raised to `k`). `q` in graph form (unit length for cosine). Only published nodes
    /// are reached.
    pub fn search(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        allowed: &dyn Fn(u32) -> bool,
    ) -> Vec<(f32, u32)> {
        let (g, s) = (self.g, &*self.s);
        if q.len() != g.p.dim {
            return Vec::new();
        }
        let entry = g.entry.load(Ordering::Acquire);
        if entry == NO_ENTRY {
            return Vec::new();
        }
        let (mut cur, top) = ((entry >> 8) as u32, (entry & 0xFF) as u8);
        let probe = Probe {
            s,
            metric: g.metric,
            q,
            qs: 1.0,
            q_norm2: q.iter().map(|x| x * x).sum(),
            codes: s.codes.as_ref(),
        };
        let mut cur_d = probe.distance(cur);
        for layer in (1..=top).rev() {
            (cur, cur_d) = g.greedy(s, &probe, cur, cur_d, layer);
        }
        let mut out = g.beam(s, &probe, &[(cur_d, cur)], ef.max(k), 0, allowed);
        if probe.codes.is_some() {
            // Rounding moves a code distance by about 1% (codes.rs): a neighbour ranked within
            // the walk's best 3k by codes is within the answer's k by rows. Measured on 390k ×
            // 50: the same recall as re-ranking all ef, 5–10% fewer row reads' worth of time.
            out.truncate(RERANK_FACTOR * k);
            // The walk ordered by codes; the rows decide which of its best are the answer.
            let exact = g.exact_probe(s, q, 1.0);
            for (d, id) in &mut out {
                *d = exact.distance(*id);
            }
            out.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        out.truncate(k);
        out
    }
}

impl Graph {
    /// A probe measuring with the f32 rows.
    pub(super) fn exact_probe<'a>(&self, s: &'a Storage, q: &'a [f32], qs: f32) -> Probe<'a> {
        Probe {
            s,
            metric: self.metric,
            q,
            qs,
            q_norm2: 0.0,
            codes: None,
        }
    }

    /// Greedy walk on one layer: the nearest node reachable by always improving.
    pub(super) fn greedy(
        &self,
        s: &Storage,
        probe: &Probe<'_>,
        mut cur: u32,
        mut cur_d: f32,
        layer: u8,
    ) -> (u32, f32) {
        let mut nbrs = Vec::with_capacity(self.p.m + 1);
        loop {
            let mut moved = false;
            self.list(s, cur, layer, &mut nbrs);
            for &nb in &nbrs {
                let d = probe.distance(nb);
                if d < cur_d {
                    (cur, cur_d, moved) = (nb, d, true);
                }
            }
            if !moved {
                return (cur, cur_d);
            }
        }
    }

    /// Beam search on one layer from `entry`: up to `ef` nearest nodes, sorted nearest first.
    /// Only nodes passing `allowed` enter the results; every node is walked through.
    pub(super) fn beam(
        &self,
        s: &Storage,
        probe: &Probe<'_>,
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
                // The next candidate's list, while this one's neighbours are measured.
                if let (0, Some(Reverse((_, next)))) = (layer, candidates.peek()) {
                    s.vectors.prefetch_links(*next as usize);
                }
                let words = self.words(s, c, layer);
                for w in words {
                    let nb = w.load(Ordering::Acquire);
                    if stamps.get(nb as usize).is_some_and(|st| *st != epoch) {
                        probe.prefetch(nb);
                    }
                }
                for w in words {
                    let nb = w.load(Ordering::Acquire);
                    let stamp = &mut stamps[nb as usize];
                    if *stamp == epoch {
                        continue;
                    }
                    *stamp = epoch;
                    let d = probe.distance(nb);
                    let full = results.len() >= ef;
                    if !full || results.peek().is_some_and(|(D(w), _)| d < *w) {
                        candidates.push(Reverse((D(d), nb)));
                        if allowed(nb) {
                            if full {
                                // Replacing the worst is one sift instead of a push and a pop.
                                if let Some(mut worst) = results.peek_mut() {
                                    *worst = (D(d), nb);
                                }
                            } else {
                                results.push((D(d), nb));
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
}
