//! The graph: recall when built by two threads, searches during inserts, allowed sets and
//! absent ids, staged nodes, snapshots that load back whole and damaged ones refused.

use super::*;
use crate::index::distance::SimdDistance;
use crate::types::Metric;

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

/// An empty graph of `dim`-dimensional vectors with M `m` and `ef_construction`.
fn graph(dim: usize, m: usize, ef_construction: usize, metric: Metric) -> Graph {
    Graph::new(
        GraphParams {
            dim,
            m,
            ef_construction,
            quantize: false,
        },
        metric,
    )
}

/// The same graph walking int8 codes.
fn quantised(dim: usize, m: usize, ef_construction: usize, metric: Metric) -> Graph {
    let g = graph(dim, m, ef_construction, metric);
    Graph::new(
        GraphParams {
            quantize: true,
            ..g.params()
        },
        metric,
    )
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
    recall_of_a_graph_built_by_two_threads(graph(16, 12, 100, Metric::L2));
}

#[test]
fn a_quantised_graph_finds_the_true_neighbours_at_their_exact_distances() {
    let g = recall_of_a_graph_built_by_two_threads(quantised(16, 12, 100, Metric::L2));
    let dist = SimdDistance { metric: Metric::L2 };
    let base = points(4000, 16, 7);
    for q in points(20, 16, 5) {
        let found = g.search(&q, 10, 64, &|_| true);
        assert_eq!(found.len(), 10);
        for (d, i) in found {
            // Re-ranked with the f32 rows: the graph distance of the vector itself.
            let exact = dist.eval(&q, &base[i as usize]);
            assert!((d - exact).abs() <= 1e-4 * exact.max(1.0), "{d} vs {exact}");
        }
    }
}

/// Inserts 4,000 points from two threads and checks recall@10 at ef 64 against brute force.
fn recall_of_a_graph_built_by_two_threads(g: Graph) -> Graph {
    let (n, dim) = (4000, 16);
    let base = points(n, dim, 7);
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
    g
}

#[test]
fn searches_running_during_inserts_see_only_published_nodes() {
    let (n, dim) = (3000, 8);
    let base = points(n, dim, 11);
    let g = graph(dim, 8, 32, Metric::L2);
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
    let g = graph(8, 8, 64, Metric::L2);
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

#[test]
fn staged_nodes_are_readable_but_not_reached_until_linked() {
    let base = points(200, 8, 5);
    let g = graph(8, 8, 32, Metric::L2);
    for (i, v) in base.iter().enumerate() {
        assert!(g.stage(i as u32, v));
    }
    assert!(!g.stage(3, &base[4]), "an id is staged once");
    assert_eq!(g.read().vector(3), Some(&base[3][..]));
    assert!(g.search(&base[3], 1, 16, &|_| true).is_empty());
    for i in 0..200 {
        g.link(i);
    }
    assert_eq!(g.nodes(), 200);
    assert_eq!(g.search(&base[3], 1, 16, &|_| true)[0].1, 3);
}

fn round_trip_graph(metric: Metric) -> (Graph, Vec<u8>, Vec<Vec<f32>>) {
    round_trip(graph(12, 8, 40, metric))
}

fn round_trip(g: Graph) -> (Graph, Vec<u8>, Vec<Vec<f32>>) {
    let base = points(1500, 12, 21);
    for (i, v) in base.iter().enumerate() {
        if i < 1400 {
            g.insert(i as u32, v);
        } else {
            g.stage(i as u32, v);
        }
    }
    let mut bytes = Vec::new();
    g.write_to(&mut bytes, base.len()).unwrap();
    (g, bytes, base)
}

#[test]
fn a_written_graph_loads_back_with_the_same_answers_and_staged_nodes() {
    loads_back_whole(graph(12, 8, 40, Metric::Cosine));
}

#[test]
fn a_quantised_graph_loads_back_with_its_codes_rebuilt_from_the_rows() {
    // Same answers as the graph that wrote the file (its codes were made when each vector was
    // staged; the loaded graph's are made from the rows), and one code line more per row.
    let back = loads_back_whole(quantised(12, 8, 40, Metric::Cosine));
    let plain = loads_back_whole(graph(12, 8, 40, Metric::Cosine));
    assert!(back.params().quantize);
    assert_eq!(back.bytes() - plain.bytes(), back.capacity() * 64);
}

fn loads_back_whole(g: Graph) -> Graph {
    let (g, bytes, base) = round_trip(g);
    let back = Graph::read_from(&mut &bytes[..], g.params(), Metric::Cosine).unwrap();
    assert_eq!(back.nodes(), 1400);
    assert_eq!(back.read().vector(1450), Some(&base[1450][..]));
    assert!(!back.contains(1450), "staged stays staged");
    for q in base.iter().take(50) {
        let q = crate::index::distance::to_graph_form(Metric::Cosine, q);
        assert_eq!(
            g.search(&q, 10, 40, &|_| true),
            back.search(&q, 10, 40, &|_| true)
        );
    }
    back.link(1450);
    assert!(back.contains(1450));
    back
}

#[test]
fn a_graph_file_that_does_not_fit_is_refused_not_loaded() {
    let (g, bytes, _) = round_trip_graph(Metric::L2);
    let p = g.params();
    // Another dimension, another metric, a truncated file.
    assert!(Graph::read_from(&mut &bytes[..], GraphParams { dim: 13, ..p }, Metric::L2).is_err());
    assert!(Graph::read_from(&mut &bytes[..], p, Metric::Dot).is_err());
    assert!(Graph::read_from(&mut &bytes[..bytes.len() - 9], p, Metric::L2).is_err());
    // A link to a node that does not exist (first word of node 0's layer-0 ids).
    let header = 8 + 12 + 1 + 16 + 1500;
    let mut bad = bytes.clone();
    bad[header + 4..header + 8].copy_from_slice(&1_000_000u32.to_le_bytes());
    let err = Graph::read_from(&mut &bad[..], p, Metric::L2)
        .err()
        .unwrap();
    assert!(err.to_string().contains("links to"), "{err}");
}
