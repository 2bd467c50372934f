//! Search quality on clustered data against brute force, per metric, and the exact-k contract
//! under deletes, replacements and a filter that matches 1% of points.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{clustered, Server};
use serde_json::{json, Value};

const N: usize = 20_000;
const DIM: usize = 32;
const QUERIES: usize = 200;
const K: usize = 10;

fn load(s: &Server, name: &str, metric: &str, data: &[Vec<f32>]) {
    load_with(s, name, json!({"dimension": DIM, "metric": metric}), data);
}

fn load_with(s: &Server, name: &str, create: Value, data: &[Vec<f32>]) {
    s.ok("PUT", &format!("/api/v1/collections/{name}"), Some(&create));
    for (b, chunk) in data.chunks(2000).enumerate() {
        let points: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| json!({"id": format!("p{}", b * 2000 + i), "vector": v, "metadata": {"bucket": (b * 2000 + i) % 100}}))
            .collect();
        s.ok(
            "PUT",
            &format!("/api/v1/collections/{name}/points"),
            Some(&json!({ "points": points })),
        );
    }
}

/// Waits until every point of `name` is linked into its shard's graph (acknowledged points are
/// searched exactly until then, which would hide the graph's own recall).
fn wait_indexed(s: &Server, name: &str) {
    let label = format!("collection=\"{name}\"");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = s.metrics();
        let published = text
            .lines()
            .any(|l| l.starts_with("ruvector_shard_unindexed{") && l.contains(&label));
        if published && s.metric("ruvector_shard_unindexed", &[&label]) == 0.0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} not indexed in 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn score(metric: &str, q: &[f32], v: &[f32]) -> f32 {
    let dot: f32 = q.iter().zip(v).map(|(a, b)| a * b).sum();
    match metric {
        "cosine" => {
            let nq: f32 = q.iter().map(|x| x * x).sum::<f32>().sqrt();
            let nv: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            dot / (nq * nv)
        }
        "dot" => dot,
        _ => -q
            .iter()
            .zip(v)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            .sqrt(),
    }
}

fn brute_top(
    metric: &str,
    data: &[Vec<f32>],
    q: &[f32],
    k: usize,
    keep: impl Fn(usize) -> bool,
) -> Vec<String> {
    let mut scored: Vec<(f32, usize)> = data
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(i, v)| (score(metric, q, v), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
        .into_iter()
        .take(k)
        .map(|(_, i)| format!("p{i}"))
        .collect()
}

fn result_ids(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn recall_at_10_is_at_least_095_for_every_metric() {
    let s = Server::start(&[]);
    // Half the queries come from the data's clusters, half from other clusters (queries unlike
    // anything stored are the harder case for a graph index).
    let (data, mut queries) = common::clustered_with_queries(N, QUERIES / 2, DIM, 50, 0.35, 7);
    queries.extend(clustered(QUERIES / 2, DIM, 50, 0.35, 7_000_001));
    for metric in ["cosine", "l2", "dot"] {
        load(&s, metric, metric, &data);
        wait_indexed(&s, metric);
        let recall = recall_with_exact_scores(&s, metric, metric, &data, &queries);
        println!("{metric}: recall@10 = {recall:.4}");
        assert!(recall >= 0.95, "{metric}: recall@10 = {recall}");
    }
    // The searches ran on the graph, not on a fallback (one shard search per shard per query).
    let shards = s.ok("GET", "/api/v1/collections/l2", None)["shards"]
        .as_u64()
        .expect("shards") as usize;
    assert!(
        s.metric("ruvector_shard_search_seconds_count", &["path=\"graph\""])
            >= (3 * QUERIES * shards) as f64 * 0.9
    );
}

/// Recall@10 of `name` over `queries` against brute force; every score must be the exact one.
fn recall_with_exact_scores(
    s: &Server,
    name: &str,
    metric: &str,
    data: &[Vec<f32>],
    queries: &[Vec<f32>],
) -> f64 {
    let mut found = 0usize;
    for q in queries {
        let truth = brute_top(metric, data, q, K, |_| true);
        let r = s.ok(
            "POST",
            &format!("/api/v1/collections/{name}/points/search"),
            Some(&json!({"vector": q, "k": K, "with_metadata": false})),
        );
        let got = result_ids(&r);
        assert_eq!(got.len(), K);
        found += got.iter().filter(|id| truth.contains(id)).count();
        for h in r["results"].as_array().unwrap() {
            let i: usize = h["id"].as_str().unwrap()[1..].parse().unwrap();
            let (got, want) = (
                h["score"].as_f64().unwrap(),
                score(metric, q, &data[i]) as f64,
            );
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                "{name}: score {got} for p{i}, exactly {want}"
            );
        }
    }
    found as f64 / (queries.len() * K) as f64
}

#[test]
fn int8_collections_keep_recall_and_exact_scores_for_every_metric_across_a_restart() {
    let mut s = Server::start(&[]);
    let (data, mut queries) = common::clustered_with_queries(N, QUERIES / 2, DIM, 50, 0.35, 7);
    queries.extend(clustered(QUERIES / 2, DIM, 50, 0.35, 7_000_001));
    let (status, body) = s.call(
        "PUT",
        "/api/v1/collections/bad",
        Some(&json!({"dimension": DIM, "hnsw": {"quantization": "int4"}})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("quantization"));
    for metric in ["cosine", "l2", "dot"] {
        let name = format!("q-{metric}");
        let create = json!({"dimension": DIM, "metric": metric, "hnsw": {"quantization": "int8"}});
        load_with(&s, &name, create, &data);
        wait_indexed(&s, &name);
        let info = s.ok("GET", &format!("/api/v1/collections/{name}"), None);
        assert_eq!(info["hnsw"]["quantization"], "int8");
        let recall = recall_with_exact_scores(&s, &name, metric, &data, &queries);
        println!("{metric} int8: recall@10 = {recall:.4}");
        assert!(recall >= 0.95, "{metric} int8: recall@10 = {recall}");
    }
    // A default collection says so.
    load(&s, "plain", "cosine", &data[..100]);
    let info = s.ok("GET", "/api/v1/collections/plain", None);
    assert_eq!(info["hnsw"]["quantization"], "none");
    // After a restart (codes rebuilt from the loaded vectors) the collection is still int8 and
    // as good.
    s.terminate();
    let s = Server::start_in(&s.dir.clone(), &[], 1);
    wait_indexed(&s, "q-cosine");
    let info = s.ok("GET", "/api/v1/collections/q-cosine", None);
    assert_eq!(info["hnsw"]["quantization"], "int8");
    let recall = recall_with_exact_scores(&s, "q-cosine", "cosine", &data, &queries);
    assert!(
        recall >= 0.95,
        "cosine int8 after a restart: recall@10 = {recall}"
    );
}

#[test]
fn exact_k_under_selective_filters_deletes_and_replacements() {
    let s = Server::start(&[]);
    let n = 20_000;
    let (data, queries) = common::clustered_with_queries(n, 40, DIM, 40, 0.4, 11);
    load(&s, "f", "l2", &data);
    // Delete 1,000 points and move 1,000 others far away.
    for chunk in (0..1000).collect::<Vec<_>>().chunks(250) {
        for i in chunk {
            s.ok(
                "DELETE",
                &format!("/api/v1/collections/f/points/p{}", i * 20),
                None,
            );
        }
    }
    let moved: Vec<Value> = (0..1000).map(|i| json!({"id": format!("p{}", i * 20 + 1), "vector": vec![100.0f32; DIM], "metadata": {"bucket": 1000}})).collect();
    s.ok(
        "PUT",
        "/api/v1/collections/f/points",
        Some(&json!({ "points": moved })),
    );
    assert_eq!(
        s.ok("GET", "/api/v1/collections/f", None)["count"],
        n - 1000
    );
    let deleted = |i: usize| i.is_multiple_of(20) && i < 20_000;
    let moved_away = |i: usize| i % 20 == 1 && i < 20_000;
    let mut overlap = 0usize;
    for (qi, q) in queries.iter().enumerate() {
        // 1% filter: bucket 3 holds 200 points; none of them is deleted or moved.
        let bucket = 3 + (qi % 5) * 20;
        let r = s.ok(
            "POST",
            "/api/v1/collections/f/points/search",
            Some(&json!({"vector": q, "k": K, "filter": {"bucket": bucket}})),
        );
        let got = result_ids(&r);
        assert_eq!(got.len(), K, "exactly k with a 1% filter");
        for h in r["results"].as_array().unwrap() {
            assert_eq!(h["metadata"]["bucket"], bucket);
        }
        let truth = brute_top("l2", &data, q, K, |i| {
            i % 100 == bucket && !deleted(i) && !moved_away(i)
        });
        overlap += got.iter().filter(|id| truth.contains(id)).count();
        // Unfiltered: deleted and moved points never come back.
        let r = s.ok(
            "POST",
            "/api/v1/collections/f/points/search",
            Some(&json!({"vector": q, "k": 100})),
        );
        let got = result_ids(&r);
        assert_eq!(got.len(), 100);
        for id in &got {
            let i: usize = id[1..].parse().unwrap();
            assert!(
                !deleted(i) && !moved_away(i),
                "{id} is deleted or moved away"
            );
        }
    }
    assert!(
        overlap as f64 / (40 * K) as f64 >= 0.95,
        "filtered recall {overlap}/400"
    );
    // A filter matching fewer than k points returns exactly those.
    let r = s.ok("POST", "/api/v1/collections/f/points/search", Some(&json!({"vector": queries[0], "k": 50, "filter": {"must": [{"key": "bucket", "match": 7}, {"key": "bucket", "range": {"lt": 8}}]}})));
    assert_eq!(result_ids(&r).len(), 50);
    let r = s.ok(
        "POST",
        "/api/v1/collections/f/points/search",
        Some(&json!({"vector": queries[0], "k": 1000, "filter": {"bucket": 1000}})),
    );
    assert_eq!(result_ids(&r).len(), 1000, "every moved point, no more");
}

#[test]
fn tombstones_trigger_a_background_rebuild_while_searches_stay_exact() {
    let s = Server::start(&[
        ("RUVECTOR__INDEX__REBUILD_MIN_TOMBSTONES", "200"),
        ("RUVECTOR__INDEX__REBUILD_TOMBSTONE_FRACTION", "0.2"),
        ("RUVECTOR__INDEX__EXACT_SCAN_MAX_POINTS", "0"),
    ]);
    s.ok(
        "PUT",
        "/api/v1/collections/r",
        Some(&json!({"dimension": DIM, "metric": "l2", "shards": 1})),
    );
    let data = clustered(4000, DIM, 10, 0.4, 21);
    let points: Vec<Value> = data
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"id": format!("p{i}"), "vector": v}))
        .collect();
    s.ok(
        "PUT",
        "/api/v1/collections/r/points",
        Some(&json!({ "points": points })),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let searcher = {
        let (base, stop, q) = (s.base.clone(), stop.clone(), data[7].clone());
        std::thread::spawn(move || {
            let c = common::client();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r: Value = c
                    .post(format!("{base}/api/v1/collections/r/points/search"))
                    .json(&json!({"vector": q, "k": 20}))
                    .send()
                    .unwrap()
                    .json()
                    .unwrap();
                let ids = result_ids(&r);
                assert_eq!(ids.len(), 20, "{r}");
                let unique: std::collections::HashSet<&String> = ids.iter().collect();
                assert_eq!(unique.len(), ids.len(), "a point returned twice: {r}");
                n += 1;
            }
            n
        })
    };
    for i in (1..3000).step_by(2) {
        s.ok(
            "DELETE",
            &format!("/api/v1/collections/r/points/p{i}"),
            None,
        );
    }
    let t = std::time::Instant::now();
    while s.metric("ruvector_index_rebuilds_total", &[]) < 1.0 {
        assert!(t.elapsed().as_secs() < 60, "no rebuild: {}", s.log_text());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Writes after the rebuild started are kept too.
    s.ok(
        "PUT",
        "/api/v1/collections/r/points",
        Some(&json!({"points": [{"id": "late", "vector": data[7]}]})),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(searcher.join().unwrap() > 0);
    assert_eq!(
        s.ok("GET", "/api/v1/collections/r", None)["count"],
        4000 - 1500 + 1
    );
    let r = s.ok(
        "POST",
        "/api/v1/collections/r/points/search",
        Some(&json!({"vector": data[7], "k": 1000})),
    );
    let ids = result_ids(&r);
    assert_eq!(ids.len(), 1000);
    assert_eq!(ids[0], "late");
    for id in &ids[1..] {
        let i: usize = id[1..].parse().unwrap();
        assert!(
            !(i < 3000 && i % 2 == 1),
            "deleted {id} returned after the rebuild"
        );
    }
    let t = std::time::Instant::now();
    // Deletes that raced the rebuild are tombstones of the new graph; what is left must be
    // under the trigger (200), or another rebuild runs.
    while s.metric("ruvector_shard_tombstones", &["collection=\"r\""]) >= 200.0 {
        assert!(t.elapsed().as_secs() < 30, "tombstones not reclaimed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
