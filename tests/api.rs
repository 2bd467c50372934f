//! REST contract: collections, points, search, short paths, caching headers, health, metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Server;
use serde_json::{json, Value};

fn ids(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|h| h["id"].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn collection_lifecycle_follows_the_contract() {
    let s = Server::start(&[]);
    let def = json!({"dimension": 4, "metric": "l2", "shards": 3, "hnsw": {"m": 8}});
    let (st, info) = s.call("PUT", "/api/v1/collections/docs", Some(&def));
    assert_eq!(st, 201, "{info}");
    assert_eq!(info["shards"], 3);
    assert_eq!(info["hnsw"]["m"], 8);
    assert_eq!(info["hnsw"]["ef_construction"], 200, "default from config");
    let (st, _) = s.call("PUT", "/api/v1/collections/docs", Some(&def));
    assert_eq!(st, 200, "identical definition");
    let (st, e) = s.call(
        "PUT",
        "/api/v1/collections/docs",
        Some(&json!({"dimension": 5})),
    );
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (409, Some("already_exists"))
    );
    let list = s.ok("GET", "/api/v1/collections", None);
    assert_eq!(list["collections"][0]["name"], "docs");
    let (st, _) = s.call("DELETE", "/api/v1/collections/docs", None);
    assert_eq!(st, 204);
    let (st, e) = s.call("GET", "/api/v1/collections/docs", None);
    assert_eq!((st, e["error"]["code"].as_str()), (404, Some("not_found")));
    // Re-created empty after a delete.
    s.ok(
        "PUT",
        "/api/v1/collections/docs",
        Some(&json!({"dimension": 2})),
    );
    assert_eq!(s.ok("GET", "/api/v1/collections/docs", None)["count"], 0);
}

#[test]
fn upsert_get_patch_delete_and_search() {
    let s = Server::start(&[]);
    s.ok(
        "PUT",
        "/api/v1/collections/c",
        Some(&json!({"dimension": 3, "metric": "l2"})),
    );
    let pts = json!({"points": [
        {"id": "a", "vector": [0, 0, 0], "metadata": {"kind": "x", "n": 1}},
        {"id": "b", "vector": [1, 0, 0], "metadata": {"kind": "y"}},
        {"id": "c", "vector": [2, 0, 0]},
        {"vector": [3, 0, 0]}
    ]});
    let r = s.ok("PUT", "/api/v1/collections/c/points", Some(&pts));
    let assigned = r["ids"][3].as_str().expect("uuid").to_string();
    assert_eq!(assigned.len(), 36);
    let p = s.ok("GET", "/api/v1/collections/c/points/a", None);
    assert_eq!(
        p,
        json!({"id": "a", "vector": [0.0, 0.0, 0.0], "metadata": {"kind": "x", "n": 1}})
    );

    let q = json!({"vector": [0.1, 0, 0], "k": 2});
    let r = s.ok("POST", "/api/v1/collections/c/points/search", Some(&q));
    assert_eq!(ids(&r), ["a", "b"]);
    let top = &r["results"][0];
    assert!((top["distance"].as_f64().unwrap() - 0.1).abs() < 1e-5);
    assert!(
        (top["score"].as_f64().unwrap() + 0.1).abs() < 1e-5,
        "l2 score is -distance"
    );
    assert_eq!(top["metadata"]["kind"], "x");
    assert!(r["took_ms"].as_f64().is_some());

    // Upsert replaces: a moves far away.
    s.ok(
        "PUT",
        "/api/v1/collections/c/points",
        Some(&json!({"points": [{"id": "a", "vector": [9, 9, 9]}]})),
    );
    let r = s.ok("POST", "/api/v1/collections/c/points/search", Some(&q));
    assert_eq!(ids(&r), ["b", "c"]);
    assert_eq!(s.ok("GET", "/api/v1/collections/c", None)["count"], 4);

    // Patch merges; null removes a key.
    let p = s.ok(
        "PATCH",
        "/api/v1/collections/c/points/b",
        Some(&json!({"metadata": {"kind": null, "tag": 7}})),
    );
    assert_eq!(p["metadata"], json!({"tag": 7}));
    let (st, _) = s.call(
        "PATCH",
        "/api/v1/collections/c/points/zzz",
        Some(&json!({"metadata": {}})),
    );
    assert_eq!(st, 404);

    // Delete: gone from get and search, a second delete is 404.
    assert_eq!(
        s.ok("DELETE", "/api/v1/collections/c/points/b", None),
        json!({"deleted": true})
    );
    let (st, _) = s.call("DELETE", "/api/v1/collections/c/points/b", None);
    assert_eq!(st, 404);
    let (st, _) = s.call("GET", "/api/v1/collections/c/points/b", None);
    assert_eq!(st, 404);
    let r = s.ok(
        "POST",
        "/api/v1/collections/c/points/search",
        Some(&json!({"vector": [1, 0, 0], "k": 10})),
    );
    assert_eq!(ids(&r).len(), 3, "exactly the live points");
    assert!(!ids(&r).contains(&"b".to_string()));

    // Search by id, score threshold, with_vector, filter.
    let r = s.ok(
        "POST",
        "/api/v1/collections/c/points/search",
        Some(&json!({"id": "c", "k": 1, "with_vector": true})),
    );
    assert_eq!(r["results"][0]["vector"], json!([2.0, 0.0, 0.0]));
    let r = s.ok(
        "POST",
        "/api/v1/collections/c/points/search",
        Some(&json!({"vector": [2, 0, 0], "k": 10, "score_threshold": -1.5})),
    );
    assert_eq!(ids(&r), ["c", assigned.as_str()]);
    let r = s.ok("POST", "/api/v1/collections/c/points/search", Some(&json!({"vector": [9, 9, 9], "k": 10, "filter": {"must_not": [{"key": "kind", "exists": true}]}})));
    assert_eq!(ids(&r).len(), 3);

    // Batch search.
    let r = s.ok(
        "POST",
        "/api/v1/collections/c/points/search/batch",
        Some(&json!({"searches": [{"vector": [2, 0, 0], "k": 1}, {"vector": [9, 9, 9], "k": 2}]})),
    );
    assert_eq!(r["results"][0][0]["id"], "c");
    assert_eq!(r["results"][1][0]["id"], "a");
    assert_eq!(r["results"][1].as_array().unwrap().len(), 2);
}

#[test]
fn short_paths_create_default_and_cache_by_etag() {
    let s = Server::start(&[]);
    let r = s.ok(
        "POST",
        "/api/v1/insert",
        Some(&json!({"id": "q1", "vector": [1, 0], "metadata": {"t": "a"}})),
    );
    assert_eq!(r["ids"], json!(["q1"]));
    s.ok(
        "POST",
        "/api/v1/insert",
        Some(&json!({"vectors": [{"id": "q2", "vector": [0, 1]}, {"id": "q3", "vector": [1, 1]}]})),
    );
    let info = s.ok("GET", "/api/v1/collections/default", None);
    assert_eq!(
        (
            info["dimension"].as_u64(),
            info["metric"].as_str(),
            info["count"].as_u64()
        ),
        (Some(2), Some("cosine"), Some(3))
    );
    let r = s.ok(
        "POST",
        "/api/v1/search",
        Some(&json!({"query": [1, 0.1], "k": 2})),
    );
    assert_eq!(ids(&r), ["q1", "q3"]);
    let (st, e) = s.call(
        "POST",
        "/api/v1/search",
        Some(&json!({"query": [1, 0.1], "k": 2, "metric": "l2"})),
    );
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (400, Some("invalid_argument"))
    );

    let c = common::client();
    let res = c
        .get(s.url("/api/v1/search?query_vector_id=q1&k=2"))
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "public, max-age=30");
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    let body: Value = res.json().unwrap();
    assert_eq!(ids(&body), ["q1", "q3"]);
    let res = c
        .get(s.url("/api/v1/search?query_vector_id=q1&k=2"))
        .header("if-none-match", &etag)
        .send()
        .unwrap();
    assert_eq!(res.status(), 304);
    s.ok(
        "POST",
        "/api/v1/insert",
        Some(&json!({"id": "q4", "vector": [1, 0.01]})),
    );
    let res = c
        .get(s.url("/api/v1/search?query_vector_id=q1&k=2"))
        .header("if-none-match", &etag)
        .send()
        .unwrap();
    assert_eq!(res.status(), 200, "a write changes the ETag");
    assert_ne!(res.headers()["etag"].to_str().unwrap(), etag);
}

#[test]
fn probes_and_metrics() {
    let s = Server::start(&[]);
    for p in ["/health/startup", "/health/live", "/health/ready"] {
        let v = s.ok("GET", p, None);
        assert_eq!(v["region"], "local");
        assert!(v["version"].is_string() && v["status"].is_string());
    }
    s.ok(
        "PUT",
        "/api/v1/collections/m",
        Some(&json!({"dimension": 2})),
    );
    s.ok(
        "PUT",
        "/api/v1/collections/m/points",
        Some(&json!({"points": [{"id": "x", "vector": [1, 2]}]})),
    );
    s.ok(
        "POST",
        "/api/v1/collections/m/points/search",
        Some(&json!({"vector": [1, 2]})),
    );
    std::thread::sleep(std::time::Duration::from_millis(700));
    let text = s.metrics();
    for name in [
        "ruvector_http_requests_total",
        "ruvector_http_request_duration_seconds_bucket",
        "ruvector_wal_fsync_seconds_bucket",
        "ruvector_shard_points",
        "ruvector_shard_search_seconds_bucket",
        "ruvector_search_queue_depth",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert!(
        s.metric(
            "ruvector_http_requests_total",
            &[
                "route=\"/api/v1/collections/{name}/points\"",
                "status=\"200\""
            ]
        ) >= 1.0
    );
    assert_eq!(
        s.metric("ruvector_shard_points", &["collection=\"m\""]),
        1.0
    );
}

#[test]
fn sigterm_drains_and_restart_loads_the_final_snapshot() {
    let mut s = Server::start(&[]);
    s.ok(
        "PUT",
        "/api/v1/collections/d",
        Some(&json!({"dimension": 2, "shards": 2})),
    );
    let pts: Vec<Value> = (0..50)
        .map(|i| json!({"id": format!("p{i}"), "vector": [i as f32, 1.0]}))
        .collect();
    s.ok(
        "PUT",
        "/api/v1/collections/d/points",
        Some(&json!({ "points": pts })),
    );
    let took = s.terminate();
    assert!(took.as_millis() < 10_000, "drain took {took:?}");
    let dir = s.dir.clone();
    let s2 = Server::start_in(&dir, &[], 1);
    assert_eq!(s2.ok("GET", "/api/v1/collections/d", None)["count"], 50);
    assert_eq!(
        s2.metric("ruvector_shard_loads_total", &["graph=\"snapshot\""]),
        2.0
    );
    assert_eq!(s2.metric("ruvector_wal_replayed_records_total", &[]), 0.0);
}

#[test]
fn invalid_configuration_fails_the_start_naming_the_key() {
    for (key, value, named) in [
        ("RUVECTOR__SERVER__PORT", "eighty", "server.port"),
        ("RUVECTOR__STORAGE__FSYNC", "sometimes", "storage.fsync"),
        ("RUVECTOR__INDEX__MAX_K", "0", "index.max_k"),
        ("HNSW_M", "1000", "index.hnsw"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ruvector-streaming"))
            .env(key, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{key}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{key}={value}: {err}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ruvector-streaming"))
        .args(["--config", "/nonexistent/ruvector.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_full_search_pool_answers_overloaded_with_retry_after() {
    let s = Server::start(&[
        ("RUVECTOR__INDEX__SEARCH_THREADS", "1"),
        ("RUVECTOR__INDEX__SEARCH_QUEUE", "2"),
        // Every search is an exact scan of all points: slow enough to fill the pool.
        ("RUVECTOR__INDEX__EXACT_SCAN_MAX_POINTS", "1000000"),
    ]);
    s.ok(
        "PUT",
        "/api/v1/collections/busy",
        Some(&json!({"dimension": 64, "metric": "l2", "shards": 2})),
    );
    let data = common::clustered(20_000, 64, 10, 0.3, 9);
    for chunk in data.chunks(5000) {
        let points: Vec<Value> = chunk.iter().map(|v| json!({"vector": v})).collect();
        s.ok(
            "PUT",
            "/api/v1/collections/busy/points",
            Some(&json!({ "points": points })),
        );
    }
    let q = data[0].clone();
    let clients: Vec<_> = (0..12)
        .map(|_| {
            let (base, q) = (s.base.clone(), q.clone());
            std::thread::spawn(move || {
                let c = common::client();
                let mut seen = (0usize, 0usize, 0usize);
                for _ in 0..15 {
                    let res = c
                        .post(format!("{base}/api/v1/collections/busy/points/search"))
                        .json(&json!({"vector": q, "k": 1000}))
                        .send()
                        .unwrap();
                    match res.status().as_u16() {
                        200 => seen.0 += 1,
                        503 => {
                            assert!(res.headers().contains_key("retry-after"));
                            let v: Value = res.json().unwrap();
                            assert_eq!(v["error"]["code"], "overloaded");
                            assert_eq!(v["retry_after_ms"], 1000);
                            seen.1 += 1;
                        }
                        // Shedding is on, as shipped: the queueing this test causes may also
                        // engage the throttle, which answers 429 with a retry time.
                        429 => {
                            assert!(res.headers().contains_key("retry-after"));
                            let v: Value = res.json().unwrap();
                            assert_eq!(v["error"]["code"], "rate_limited");
                            seen.2 += 1;
                        }
                        other => panic!("unexpected status {other}: {}", res.text().unwrap()),
                    }
                }
                seen
            })
        })
        .collect();
    let ok = clients
        .into_iter()
        .map(|c| c.join().unwrap())
        .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
    let (ok, shed, throttled) = (ok.0, ok.1, ok.2);
    // What answered, for the message of a failure on a loaded machine (the shedder may shed or
    // throttle beside the pool).
    let overloaded = ["search_pool", "shedding"]
        .map(|r| s.metric("ruvector_overloaded_total", &[&format!("reason=\"{r}\"")]));
    assert!(
        ok > 0 && shed > 0,
        "{ok} served, {shed} shed, {throttled} throttled; overloaded by pool/shedder {overloaded:?}"
    );
    assert!(
        overloaded[0] > 0.0,
        "overloaded by pool/shedder {overloaded:?}"
    );
    // Once the burst is over, searches are served again (after any retry time the shedder gave).
    let t = std::time::Instant::now();
    let r = loop {
        let (st, v) = s.call(
            "POST",
            "/api/v1/collections/busy/points/search",
            Some(&json!({"vector": q, "k": 3})),
        );
        if st == 200 {
            break v;
        }
        assert!(matches!(st, 429 | 503), "{st} {v}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "not served again: {v}"
        );
        let wait = v["retry_after_ms"].as_u64().unwrap_or(100);
        std::thread::sleep(std::time::Duration::from_millis(wait));
    };
    assert_eq!(r["results"].as_array().unwrap().len(), 3);
}

#[test]
fn searches_on_the_request_thread_answer_like_the_pool_and_follow_deletes() {
    let s = Server::start(&[]);
    s.ok(
        "PUT",
        "/api/v1/collections/inline",
        Some(&json!({"dimension": 16, "metric": "l2", "shards": 2})),
    );
    // Past index.exact_scan_max_points (1,024) per shard: searches go through the graph.
    let data = common::clustered(4_000, 16, 8, 0.3, 11);
    let points: Vec<Value> = data
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"id": format!("p{i}"), "vector": v, "metadata": {"all": true}}))
        .collect();
    s.ok(
        "PUT",
        "/api/v1/collections/inline/points",
        Some(&json!({ "points": points })),
    );
    for q in data.iter().step_by(97) {
        // No filter, default ef: runs on the request's thread. A filter every point passes
        // (same graph search) goes to the search pool. Both must answer the same ranking.
        let inline = s.ok(
            "POST",
            "/api/v1/collections/inline/points/search",
            Some(&json!({"vector": q, "k": 10})),
        );
        let pooled = s.ok(
            "POST",
            "/api/v1/collections/inline/points/search",
            Some(&json!({"vector": q, "k": 10, "filter": {"all": true}})),
        );
        assert_eq!(ids(&inline), ids(&pooled));
        assert_eq!(ids(&inline).len(), 10);
    }
    // A deleted collection is gone at once for searches too; its successor is the one served.
    let (st, _) = s.call("DELETE", "/api/v1/collections/inline", None);
    assert_eq!(st, 204);
    let (st, e) = s.call(
        "POST",
        "/api/v1/collections/inline/points/search",
        Some(&json!({"vector": data[0], "k": 3})),
    );
    assert_eq!((st, e["error"]["code"].as_str()), (404, Some("not_found")));
    s.ok(
        "PUT",
        "/api/v1/collections/inline",
        Some(&json!({"dimension": 2, "metric": "l2"})),
    );
    let (st, e) = s.call(
        "POST",
        "/api/v1/collections/inline/points/search",
        Some(&json!({"vector": data[0], "k": 3})),
    );
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (400, Some("dimension_mismatch"))
    );
}
