//! The region's Redis is optional and never on the path of local serving: `ruvector_redis_up`
//! follows it, a Redis that dies or is missing at start costs requests nothing, and the server
//! reconnects by itself. Real `redis-server` processes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::redis_server::{free_port, RedisServer};
use common::{wait_for, Server};
use serde_json::json;

/// A write and a search, each answered well within a second.
fn serve_locally(s: &Server, n: usize) {
    let t = Instant::now();
    s.ok(
        "PUT",
        "/api/v1/collections/local/points",
        Some(&json!({"points": [{"id": format!("p{n}"), "vector": [n as f32, 1.0]}]})),
    );
    let r = s.ok(
        "POST",
        "/api/v1/collections/local/points/search",
        Some(&json!({"vector": [n as f32, 1.0], "k": 1})),
    );
    assert_eq!(r["results"][0]["id"], format!("p{n}"));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

#[test]
fn redis_up_follows_the_region_redis_and_local_serving_never_stops() {
    let mut redis = RedisServer::start(false);
    let url = redis.url();
    let s = Server::start(&[("REDIS_URL", url.as_str())]);
    s.ok(
        "PUT",
        "/api/v1/collections/local",
        Some(&json!({"dimension": 2, "metric": "l2"})),
    );
    assert!(
        wait_for(Duration::from_secs(5), || s
            .metric("ruvector_redis_up", &[])
            == 1.0),
        "ruvector_redis_up never became 1"
    );
    serve_locally(&s, 0);
    redis.kill();
    for n in 1..20 {
        serve_locally(&s, n);
    }
    assert!(
        wait_for(Duration::from_secs(5), || s
            .metric("ruvector_redis_up", &[])
            == 0.0),
        "ruvector_redis_up stayed 1 with Redis gone"
    );
    serve_locally(&s, 20);
    redis.restart();
    assert!(
        wait_for(Duration::from_secs(5), || s
            .metric("ruvector_redis_up", &[])
            == 1.0),
        "no reconnect after Redis returned"
    );
    serve_locally(&s, 21);
    assert!(s.log_text().contains("redis is down"));
}

#[test]
fn a_server_whose_redis_is_missing_at_start_starts_and_serves() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let t = Instant::now();
    let s = Server::start(&[("REDIS_URL", url.as_str())]);
    assert!(t.elapsed() < Duration::from_secs(10));
    s.ok(
        "PUT",
        "/api/v1/collections/local",
        Some(&json!({"dimension": 2, "metric": "l2"})),
    );
    serve_locally(&s, 0);
    assert_eq!(s.metric("ruvector_redis_up", &[]), 0.0);
    let (st, v) = s.call("GET", "/health/ready", None);
    assert_eq!(st, 200, "{v}");
}

#[test]
fn bad_tier_settings_fail_the_start_with_the_key_named() {
    for (key, value, named) in [
        ("REDIS_URL", "http://x", "redis.url"),
        ("RUVECTOR__SERVER__REGION", "us east", "server.region"),
        ("RUVECTOR__SERVER__INSTANCE_ID", "a/b", "server.instance_id"),
        (
            "RUVECTOR__REDIS__COMMAND_TIMEOUT_MS",
            "0",
            "redis.command_timeout_ms",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ruvector-streaming"))
            .env(key, value)
            .env("RUVECTOR__STORAGE__DATA_DIR", "/nonexistent/never-used")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{key}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{key}={value}: {err}");
    }
}

#[test]
fn a_blocking_read_longer_than_the_default_response_timeout_waits_it_out() {
    let redis = RedisServer::start(false);
    let settings = ruvector_streaming::settings::Settings::load_from(
        None,
        &[("REDIS_URL".to_string(), redis.url())],
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tier = ruvector_streaming::tier::RedisTier::start(&settings.redis)
            .unwrap()
            .expect("configured");
        let block = Duration::from_millis(1500);
        let mut conn = tier.blocking_connection(block).await.unwrap();
        let t = Instant::now();
        // Nothing arrives: the read must wait the whole block time and answer nil, not fail
        // after redis-rs's default 500 ms response timeout.
        let got: Option<redis::Value> = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(1500)
            .arg("STREAMS")
            .arg("nothing-here")
            .arg("$")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(got.is_none(), "{got:?}");
        assert!(
            t.elapsed() >= Duration::from_millis(1400),
            "{:?}",
            t.elapsed()
        );
    });
}

#[test]
fn an_instance_id_is_generated_once_kept_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &[], 0);
    let id = s.ok("GET", "/health/ready", None)["instance"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 32);
    s.terminate();
    let s = Server::start_in(dir.path(), &[], 1);
    assert_eq!(s.ok("GET", "/health/ready", None)["instance"], id.as_str());
    drop(s);
    let s = Server::start_in(dir.path(), &[("RUVECTOR__SERVER__INSTANCE_ID", "us-2")], 2);
    assert_eq!(s.ok("GET", "/health/ready", None)["instance"], "us-2");
}
