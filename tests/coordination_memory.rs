//! Memory embeddings in the vector index: a tenant's embeddings live in its collection
//! `coordination-memory`, searchable like any other; `memory_search` filters it by namespace and
//! answers only points whose entry is live at the same revision; they survive `kill -9`.
//! Default configuration (shedding and rate limits on).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Server;
use serde_json::{json, Value};

const BASE: &str = "/api/v1/coordination";

fn store(s: &Server, ns: &str, key: &str, body: Value) -> (u16, Value) {
    s.call("PUT", &format!("{BASE}/memory/{ns}/{key}"), Some(&body))
}

fn nearest(s: &Server, ns: &str, vector: Value, k: usize) -> Vec<String> {
    let r = s.ok(
        "POST",
        &format!("{BASE}/memory/{ns}/search"),
        Some(&json!({"vector": vector, "k": k})),
    );
    r["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|h| {
            assert!(h["score"].is_number(), "a vector search scores: {h}");
            h["key"].as_str().expect("key").to_owned()
        })
        .collect()
}

#[test]
fn memory_embeddings_live_in_the_tenants_collection_and_only_current_ones_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &[], 0);
    s.wait_started(Duration::from_secs(30));
    for (ns, key, v) in [
        ("kb", "a", [1.0, 0.0, 0.0, 0.0]),
        ("kb", "b", [0.0, 1.0, 0.0, 0.0]),
        ("kb", "c", [0.0, 0.0, 1.0, 0.0]),
        ("notes", "a", [1.0, 0.0, 0.0, 0.0]),
    ] {
        let (st, r) = store(&s, ns, key, json!({"value": key, "embedding": v}));
        assert_eq!((st, r["type"].as_str()), (200, Some("memory_stored")));
    }
    // The collection is an ordinary one: listed, described, searchable through the REST API.
    let info = s.ok("GET", "/api/v1/collections/coordination-memory", None);
    assert_eq!(
        (info["dimension"].as_u64(), info["metric"].as_str()),
        (Some(4), Some("cosine"))
    );
    let r = s.ok(
        "POST",
        "/api/v1/collections/coordination-memory/points/search",
        Some(&json!({"vector": [1.0, 0.0, 0.0, 0.0], "k": 10})),
    );
    let ids: Vec<&str> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4);
    assert!(ids.contains(&"kb/a") && ids.contains(&"notes/a"), "{ids:?}");
    // memory_search stays in its namespace and ranks by the embedding.
    assert_eq!(
        nearest(&s, "kb", json!([0.9, 0.3, 0.0, 0.0]), 2),
        ["a", "b"]
    );
    assert_eq!(nearest(&s, "notes", json!([0.0, 1.0, 0.0, 0.0]), 5), ["a"]);
    // The collection's dimension is the tenant's memory dimension; a refused store stores nothing.
    let (st, r) = store(&s, "kb", "d", json!({"value": 1, "embedding": [1.0, 0.0]}));
    assert_eq!(
        (st, r["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{r}"
    );
    let (st, _) = s.call("GET", &format!("{BASE}/memory/kb/d"), None);
    assert_eq!(st, 404);
    // A point nobody stored as memory (written straight into the collection) is never an answer.
    s.ok(
        "PUT",
        "/api/v1/collections/coordination-memory/points",
        Some(
            &json!({"points": [{"id": "kb/ghost", "vector": [0.0, 0.0, 0.0, 1.0],
            "metadata": {"namespace": "kb", "key": "ghost", "rev": 1}}]}),
        ),
    );
    let found = nearest(&s, "kb", json!([0.0, 0.0, 0.0, 1.0]), 10);
    assert!(!found.contains(&"ghost".to_owned()), "{found:?}");
    assert_eq!(found.len(), 3);
    // Stored again without an embedding, or deleted: the old embedding no longer counts.
    store(&s, "kb", "a", json!({"value": "plain now"}));
    s.ok("DELETE", &format!("{BASE}/memory/kb/b"), None);
    assert_eq!(nearest(&s, "kb", json!([1.0, 0.0, 0.0, 0.0]), 5), ["c"]);
    // An entry that expires stops counting at once.
    store(
        &s,
        "kb",
        "brief",
        json!({"value": 0, "embedding": [0.0, 0.0, 0.7, 0.7], "ttl": 1}),
    );
    assert_eq!(nearest(&s, "kb", json!([0.0, 0.0, 0.7, 0.7]), 1), ["brief"]);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(nearest(&s, "kb", json!([0.0, 0.0, 0.7, 0.7]), 5), ["c"]);
    // Acknowledged embeddings survive kill -9.
    s.kill9();
    let s = Server::start_in(dir.path(), &[], 1);
    s.wait_started(Duration::from_secs(30));
    assert_eq!(nearest(&s, "kb", json!([0.0, 0.0, 1.0, 0.0]), 5), ["c"]);
    assert_eq!(nearest(&s, "notes", json!([1.0, 0.0, 0.0, 0.0]), 5), ["a"]);
}
