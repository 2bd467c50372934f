//! The partition: replaced and deleted points never answer, unlinked slots are found by the
//! exact scan of the backlog, selective filters still give exactly k, vectors come back as
//! written.

use super::*;
use crate::index::distance::to_graph_form;
use serde_json::json;

fn spec(metric: Metric) -> PartitionSpec {
    PartitionSpec {
        metric,
        dimension: 4,
        hnsw: HnswParams {
            m: 16,
            ef_construction: 100,
            ef_search: 64,
            quantization: Quantization::None,
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
        exact_scan_max_points: 0,
        exact_scan_selectivity: 0.0,
    }
}

fn ids(hits: &[Hit]) -> Vec<&str> {
    hits.iter().map(|h| h.id.as_ref()).collect()
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
    p.link_all(2);
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
    assert_eq!(ids(&hits), ["p2", "p3", "p4"]);
    assert_eq!(p.live(), 199);
    let compact = p.compacted(2);
    assert_eq!(compact.table().slots.len(), 199);
    assert_eq!(compact.unindexed(), 0);
    let (hits2, _) = compact.search(&query, &graph_tuning());
    assert_eq!(hits2, hits);
}

#[test]
fn staged_points_answer_searches_before_they_are_linked() {
    let p = Partition::new(spec(Metric::L2));
    let ops: Vec<(u64, Op)> = (0..300)
        .map(|i| {
            (
                i + 1,
                upsert(&format!("p{i}"), [i as f32, 1.0, 0.0, 0.0], 0),
            )
        })
        .collect();
    p.apply(&ops);
    p.link_all(2);
    p.apply(&[(400, upsert("fresh", [0.5, 1.0, 0.0, 0.0], 0))]);
    assert_eq!(p.unindexed(), 1);
    let q = [0.0f32, 1.0, 0.0, 0.0];
    let query = PartitionQuery {
        vector: &q,
        k: 3,
        ef: 32,
        filter: None,
        with_vector: true,
        with_metadata: false,
    };
    let (hits, path) = p.search(&query, &graph_tuning());
    assert_eq!(path, SearchPath::Graph);
    assert_eq!(ids(&hits), ["p0", "fresh", "p1"]);
    assert_eq!(hits[1].vector.as_deref(), Some(&[0.5, 1.0, 0.0, 0.0][..]));
    // Linked now: found by the graph, once.
    assert_eq!(p.link_pending(1, 10), 1);
    assert_eq!(p.unindexed(), 0);
    let (again, _) = p.search(&query, &graph_tuning());
    assert_eq!(again, hits);
}

#[test]
fn cosine_points_keep_the_vectors_clients_wrote() {
    let p = Partition::new(spec(Metric::Cosine));
    let v = [3.0f32, -4.0, 0.125, 7.5];
    p.apply(&[(1, upsert("a", v, 0))]);
    p.link_all(1);
    assert_eq!(p.get_vector("a").as_deref(), Some(&v[..]));
    let q = to_graph_form(Metric::Cosine, &v);
    let (hits, _) = p.search(
        &PartitionQuery {
            vector: &q,
            k: 1,
            ef: 8,
            filter: None,
            with_vector: false,
            with_metadata: false,
        },
        &graph_tuning(),
    );
    assert!((hits[0].score - 1.0).abs() < 1e-6, "{}", hits[0].score);
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
    p.link_all(2);
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
