//! The regional search cache in the region's Redis: a repeated search is answered from it, an
//! acknowledged write is never hidden by it, and a Redis that is gone costs searches nothing.
//! Real `redis-server` processes; the default config otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::{wait_for, Server};
use serde_json::{json, Value};

/// A search with its answer and whether it came from the cache.
fn search(s: &Server, body: &Value) -> (Value, bool) {
    let res = common::client()
        .post(s.url("/api/v1/collections/docs/points/search"))
        .json(body)
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let hit = res
        .headers()
        .get("x-ruvector-cache")
        .is_some_and(|v| v == "hit");
    (res.json().unwrap(), hit)
}

fn ids(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

fn start(redis: &RedisServer, extra: &[(&str, &str)]) -> Server {
    let url = redis.url();
    let mut env = vec![("REDIS_URL", url.as_str())];
    env.extend_from_slice(extra);
    let s = Server::start(&env);
    assert!(wait_for(Duration::from_secs(5), || s
        .metric("ruvector_redis_up", &[])
        == 1.0));
    s.ok(
        "PUT",
        "/api/v1/collections/docs",
        Some(&json!({"dimension": 2, "metric": "l2"})),
    );
    let points: Vec<Value> = (0..50)
        .map(|i| json!({"id": format!("p{i}"), "vector": [i as f32, 0.0], "metadata": {"i": i}}))
        .collect();
    s.ok(
        "PUT",
        "/api/v1/collections/docs/points",
        Some(&json!({ "points": points })),
    );
    s
}

#[test]
fn a_repeated_search_is_served_from_the_cache_and_a_write_is_never_hidden() {
    let redis = RedisServer::start(false);
    let s = start(&redis, &[]);
    let q = json!({"vector": [10.2, 0.0], "k": 3});
    let (first, hit) = search(&s, &q);
    assert!(!hit);
    assert_eq!(ids(&first), ["p10", "p11", "p9"]);
    // The answer is stored in the background after the reply.
    let (second, hit) = (0..50)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            search(&s, &q)
        })
        .find(|(_, hit)| *hit)
        .expect("the repeated search never came from the cache");
    assert!(hit);
    assert_eq!(second["results"], first["results"]);
    assert!(s.metric("ruvector_cache_requests_total", &["result=\"hit\""]) >= 1.0);
    // Another k, another filter: other entries.
    let (other, hit) = search(&s, &json!({"vector": [10.2, 0.0], "k": 2}));
    assert!(!hit);
    assert_eq!(ids(&other), ["p10", "p11"]);
    // An acknowledged write is in the very next answer.
    s.ok(
        "PUT",
        "/api/v1/collections/docs/points",
        Some(&json!({"points": [{"id": "new", "vector": [10.2, 0.0]}]})),
    );
    let (after, hit) = search(&s, &q);
    assert!(!hit, "an answer from before the write was served");
    assert_eq!(ids(&after)[0], "new");
    // So is a delete, and a metadata patch.
    s.ok("DELETE", "/api/v1/collections/docs/points/new", None);
    let (after, _) = search(&s, &q);
    assert_eq!(ids(&after), ["p10", "p11", "p9"]);
    s.ok(
        "PATCH",
        "/api/v1/collections/docs/points/p10",
        Some(&json!({"metadata": {"i": "patched"}})),
    );
    let (after, _) = search(&s, &q);
    assert_eq!(after["results"][0]["metadata"]["i"], "patched");
    // A collection deleted and made again under the same name shares nothing with the old one.
    s.ok("DELETE", "/api/v1/collections/docs", None);
    s.ok(
        "PUT",
        "/api/v1/collections/docs",
        Some(&json!({"dimension": 2, "metric": "l2"})),
    );
    let (empty, hit) = search(&s, &q);
    assert!(!hit);
    assert_eq!(ids(&empty).len(), 0);
}

#[test]
fn searches_go_on_without_the_cache_when_redis_is_gone() {
    let mut redis = RedisServer::start(false);
    let s = start(&redis, &[]);
    let q = json!({"vector": [3.0, 0.0], "k": 1});
    redis.kill();
    for _ in 0..20 {
        let t = Instant::now();
        let (v, hit) = search(&s, &q);
        assert!(!hit);
        assert_eq!(ids(&v), ["p3"]);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
}

#[test]
fn cached_answers_expire_after_the_ttl() {
    // A one-second TTL instead of the default 60 s, so that the test does not wait a minute.
    let redis = RedisServer::start(false);
    let s = start(&redis, &[("RUVECTOR__REDIS__CACHE_TTL_S", "1")]);
    let q = json!({"vector": [7.0, 0.0], "k": 1});
    search(&s, &q);
    assert!(wait_for(Duration::from_secs(2), || search(&s, &q).1));
    std::thread::sleep(Duration::from_millis(2100));
    assert!(!search(&s, &q).1, "an entry outlived its TTL");
}

#[test]
fn a_hung_redis_costs_a_search_at_most_the_lookup_timeout() {
    let redis = RedisServer::start(false);
    let s = start(&redis, &[]);
    let q = json!({"vector": [5.0, 0.0], "k": 1});
    search(&s, &q);
    redis.pause();
    let mut worst = Duration::ZERO;
    for _ in 0..30 {
        let t = Instant::now();
        let (v, hit) = search(&s, &q);
        worst = worst.max(t.elapsed());
        assert!(!hit);
        assert_eq!(ids(&v), ["p5"]);
    }
    // redis.cache_lookup_timeout_ms is 20: well under a quarter second even on a busy machine.
    assert!(worst < Duration::from_millis(250), "{worst:?}");
    redis.resume();
    assert!(wait_for(Duration::from_secs(5), || search(&s, &q).1 || {
        std::thread::sleep(Duration::from_millis(50));
        search(&s, &q).1
    }));
}
