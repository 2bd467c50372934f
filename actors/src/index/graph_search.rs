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

thread_local! {
    /// Per-thread visited stamps: `stamps[i] == epoch` means visited in this search.
    static VISITED: RefCell<(Vec<u32>, u32)> = const { RefCell::new((Vec::new(), 0)) };
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
        let mut cur_d = g.dq(s, q, 1.0, cur);
        for layer in (1..=top).rev() {
            (cur, cur_d) = g.greedy(s, q, 1.0, cur, cur_d, layer);
        }
        let mut out = g.beam(s, q, 1.0, &[(cur_d, cur)], ef.max(k), 0, allowed);
        out.truncate(k);
        out
    }
}

impl Graph {
    /// Greedy walk on one layer: the nearest node reachable by always improving.
    pub(super) fn greedy(
        &self,
        s: &Storage,
        q: &[f32],
        qs: f32,
        mut cur: u32,
        mut cur_d: f32,
        layer: u8,
    ) -> (u32, f32) {
        let mut nbrs = Vec::with_capacity(self.p.m + 1);
        loop {
            let mut moved = false;
            self.list(s, cur, layer, &mut nbrs);
            for &nb in &nbrs {
                let d = self.dq(s, q, qs, nb);
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
    #[allow(clippy::too_many_arguments)]
    pub(super) fn beam(
        &self,
        s: &Storage,
        q: &[f32],
        qs: f32,
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
                    let d = self.dq(s, q, qs, nb);
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
