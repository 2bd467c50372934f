//! The graph: recall when built by two threads, searches during inserts, allowed sets and
//! absent ids.

use super::*;
use crate::types::Metric;
use hnsw_rs::prelude::Distance;

fn points(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            (0..dim)
                .map(|_| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
                })
                .collect()
        })
        .collect()
}

fn exact(base: &[Vec<f32>], q: &[f32], k: usize) -> Vec<u32> {
    let dist = SimdDistance { metric: Metric::L2 };
    let mut all: Vec<(f32, u32)> = base
        .iter()
        .enumerate()
        .map(|(i, v)| (dist.eval(q, v), i as u32))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    all.into_iter().take(k).map(|(_, i)| i).collect()
}

#[test]
fn a_graph_built_by_two_threads_finds_the_true_neighbours() {
    let (n, dim) = (4000, 16);
    let base = points(n, dim, 7);
    let g = Graph::new(
        GraphParams {
            dim,
            m: 12,
            ef_construction: 100,
        },
        SimdDistance { metric: Metric::L2 },
    );
    std::thread::scope(|s| {
        for t in 0..2 {
            let (g, base) = (&g, &base);
            s.spawn(move || {
                for i in (t..n).step_by(2) {
                    g.insert(i as u32, &base[i]);
                }
            });
        }
    });
    assert_eq!(g.nodes(), n);
    let queries = points(100, dim, 99);
    let mut found = 0;
    for q in &queries {
        let truth = exact(&base, q, 10);
        let got: Vec<u32> = g
            .search(q, 10, 64, &|_| true)
            .into_iter()
            .map(|(_, i)| i)
            .collect();
        found += got.iter().filter(|i| truth.contains(i)).count();
    }
    let recall = found as f64 / 1000.0;
    assert!(recall >= 0.95, "recall@10 at ef 64: {recall}");
}

#[test]
fn searches_running_during_inserts_see_only_published_nodes() {
    let (n, dim) = (3000, 8);
    let base = points(n, dim, 11);
    let g = Graph::new(
        GraphParams {
            dim,
            m: 8,
            ef_construction: 32,
        },
        SimdDistance { metric: Metric::L2 },
    );
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            // Ids in a scattered order, so the storage grows while searches run.
            for i in (0..n).rev() {
                g.insert(i as u32, &base[i]);
            }
            done.store(true, Ordering::Release);
        });
        s.spawn(|| {
            let mut searches = 0;
            while !done.load(Ordering::Acquire) || searches < 10 {
                let q = &base[searches % n];
                for (d, id) in g.search(q, 10, 32, &|_| true) {
                    assert!(g.contains(id), "a search returned unpublished node {id}");
                    let exact = SimdDistance { metric: Metric::L2 }.eval(q, &base[id as usize]);
                    assert!(
                        (d - exact).abs() <= 1e-4 * (1.0 + exact),
                        "row {id} read torn"
                    );
                }
                searches += 1;
            }
        });
    });
    assert_eq!(g.nodes(), n);
}

#[test]
fn searches_honour_the_allowed_set_and_absent_ids() {
    let base = points(500, 8, 3);
    let g = Graph::new(
        GraphParams {
            dim: 8,
            m: 8,
            ef_construction: 64,
        },
        SimdDistance { metric: Metric::L2 },
    );
    // Every third id holds no node.
    for (i, v) in base.iter().enumerate().filter(|(i, _)| i % 3 != 0) {
        g.insert(i as u32, v);
    }
    assert!(!g.contains(0) && g.contains(1));
    let even = |i: u32| i.is_multiple_of(2);
    let got = g.search(&base[4], 20, 64, &even);
    assert_eq!(got.len(), 20);
    assert!(got.iter().all(|(_, i)| i % 2 == 0 && i % 3 != 0));
    assert_eq!(got[0].1, 4, "the point itself is nearest");
    // Inserting an id twice keeps the first node.
    g.insert(4, &base[5]);
    assert_eq!(g.search(&base[4], 1, 16, &|_| true)[0], (0.0, 4));
}
