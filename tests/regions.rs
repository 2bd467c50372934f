//! Active-active replication between regions over Redis Streams, black box: real
//! `redis-server`s, real servers on the shipped defaults (shedding and rate limits on), each
//! region configured with the others as peers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::regions::{point, Regions};
use common::wait_for;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(5);

fn create(s: &common::Server, name: &str) {
    s.ok(
        "PUT",
        &format!("/api/v1/collections/{name}"),
        Some(&json!({"dimension": 4, "metric": "l2"})),
    );
}

fn upsert(s: &common::Server, collection: &str, points: Vec<Value>) {
    s.ok(
        "PUT",
        &format!("/api/v1/collections/{collection}/points"),
        Some(&json!({ "points": points })),
    );
}

fn get(s: &common::Server, collection: &str, id: &str) -> (u16, Value) {
    s.call(
        "GET",
        &format!("/api/v1/collections/{collection}/points/{id}"),
        None,
    )
}

fn search_ids(s: &common::Server, collection: &str, v: Vec<f32>) -> Vec<String> {
    let (status, body) = s.call(
        "POST",
        &format!("/api/v1/collections/{collection}/points/search"),
        Some(&json!({"vector": v, "k": 3})),
    );
    if status != 200 {
        return Vec::new();
    }
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_write_in_one_region_is_readable_searchable_and_pushed_to_subscribers_in_the_others() {
    let r = Regions::start(&["us", "eu", "ap"], false);
    let (a, c) = (r.server(0), r.server(2));
    create(a, "docs");
    upsert(
        a,
        "docs",
        vec![point("x", vec![1.0, 0.0, 0.0, 0.0], "first")],
    );
    for i in 1..3 {
        let s = r.server(i);
        assert!(
            wait_for(WAIT, || get(s, "docs", "x").0 == 200),
            "region {i} never saw the write"
        );
        assert!(wait_for(WAIT, || search_ids(
            s,
            "docs",
            vec![1.0, 0.0, 0.0, 0.0]
        ) == vec!["x".to_string()]));
    }
    // A subscriber in the third region sees what the first writes, over SSE and WebSocket.
    let sse = common::client()
        .get(c.url("/api/v1/stream/subscribe?collection=docs"))
        .send()
        .unwrap();
    assert_eq!(sse.status().as_u16(), 200);
    let mut lines = BufReader::new(sse).lines();
    let (mut ws, _) = tungstenite::connect(c.ws_url("/api/v1/ws")).unwrap();
    ws.send(tungstenite::Message::text(
        json!({"type": "subscribe", "id": 1, "collection": "docs"}).to_string(),
    ))
    .unwrap();
    let mut ws_next = move || -> Value {
        loop {
            if let tungstenite::Message::Text(t) = ws.read().unwrap() {
                return serde_json::from_str(t.as_str()).unwrap();
            }
        }
    };
    assert_eq!(ws_next()["type"], "subscribed");
    upsert(
        a,
        "docs",
        vec![point("y", vec![0.0, 1.0, 0.0, 0.0], "pushed")],
    );
    a.ok("DELETE", "/api/v1/collections/docs/points/x", None);
    let mut sse_data = Vec::new();
    while sse_data.len() < 3 {
        let line = lines.next().unwrap().unwrap();
        if let Some(d) = line.strip_prefix("data:") {
            sse_data.push(serde_json::from_str::<Value>(d.trim()).unwrap());
        }
    }
    assert_eq!(sse_data[1]["vector_id"], "y", "{sse_data:?}");
    assert_eq!(sse_data[2]["op"], "delete", "{sse_data:?}");
    let first = ws_next();
    assert_eq!(first["vector_id"], "y", "{first}");
    assert_eq!(ws_next()["op"], "delete");
    // The delete reached every region; each region applied the others' writes.
    for i in 1..3 {
        let s = r.server(i);
        assert!(wait_for(WAIT, || get(s, "docs", "x").0 == 404));
        assert!(wait_for(WAIT, || s
            .metric("ruvector_region_applied_total", &["peer=\"us\""])
            >= 3.0));
    }
    let dump = r.converged("docs", Some(1), WAIT);
    assert_eq!(dump[0]["version"]["region"], "us", "{dump:?}");
}

#[test]
fn concurrent_conflicting_upserts_and_deletes_converge_to_identical_dumps() {
    let r = Regions::start(&["us", "eu"], false);
    // Created in both (an identical create is a no-op where replication got there first).
    create(r.server(0), "c");
    create(r.server(1), "c");
    // Both regions write the same 300 ids at once: upserts with their own vectors and tags,
    // and deletes, interleaved, thousands in all.
    std::thread::scope(|scope| {
        for (i, tag) in [(0usize, "us"), (1, "eu")] {
            let s = r.server(i);
            scope.spawn(move || {
                for round in 0..20u32 {
                    let pts: Vec<Value> = (0..150)
                        .map(|k| {
                            let id = (k * 2 + round as usize + i) % 300;
                            point(
                                &format!("p{id}"),
                                vec![i as f32, round as f32, k as f32, 1.0],
                                tag,
                            )
                        })
                        .collect();
                    upsert(s, "c", pts);
                    for k in 0..20 {
                        let id = (k * 7 + round as usize * 3 + i) % 300;
                        let (status, _) = s.call(
                            "DELETE",
                            &format!("/api/v1/collections/c/points/p{id}"),
                            None,
                        );
                        assert!(status == 200 || status == 404, "{status}");
                    }
                }
            });
        }
    });
    let dump = r.converged("c", None, Duration::from_secs(20));
    assert!(!dump.is_empty() && dump.len() <= 300);
    let conflicts: f64 = (0..2)
        .map(|i| r.server(i).metric("ruvector_region_conflicts_total", &[]))
        .sum();
    assert!(
        conflicts > 0.0,
        "concurrent writes were counted as conflicts"
    );
    // Each point holds the state of the write whose stamp won: its tag names the region its
    // version names (a mixed state — one region's vector under the other's stamp — would not).
    for p in &dump {
        assert_eq!(p["metadata"]["tag"], p["version"]["region"], "{p}");
    }
}

#[test]
fn a_region_killed_and_restarted_catches_up_without_loss_or_duplicates() {
    let mut r = Regions::start(&["us", "eu", "ap"], false);
    create(r.server(0), "k");
    upsert(r.server(0), "k", vec![point("seed", vec![0.0; 4], "us")]);
    r.converged("k", Some(1), WAIT);
    r.kill9(1);
    for round in 0..10 {
        for w in [0usize, 2] {
            let pts = (0..30)
                .map(|k| {
                    point(
                        &format!("{w}-{round}-{k}"),
                        vec![w as f32, round as f32, k as f32, 0.0],
                        "x",
                    )
                })
                .collect();
            upsert(r.server(w), "k", pts);
        }
    }
    r.server(0)
        .ok("DELETE", "/api/v1/collections/k/points/seed", None);
    r.start_region(1);
    let dump = r.converged("k", Some(600), Duration::from_secs(15));
    let ids: std::collections::HashSet<&str> =
        dump.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 600, "no duplicates");
    assert!(!ids.contains("seed"));
}

#[test]
fn a_new_instance_with_an_empty_disk_is_ready_only_once_it_holds_its_peers_backlog() {
    const POINTS: usize = 20_000;
    let mut r = Regions::start(&["us", "eu"], false);
    create(r.server(0), "big");
    for start in (0..POINTS).step_by(1_000) {
        let pts = (start..start + 1_000)
            .map(|i| point(&format!("p{i}"), vec![i as f32, 1.0, 2.0, 3.0], "us"))
            .collect();
        upsert(r.server(0), "big", pts);
    }
    r.kill9(1);
    r.wipe_data(1);
    r.start_region(1);
    let eu = r.server(1);
    // The probe a load balancer uses: the first 200 it sees must come with every point there.
    let mut catching_up = 0;
    let ready = wait_for(Duration::from_secs(60), || {
        let (status, body) = eu.call("GET", "/health/ready", None);
        if status == 503 && body["status"] == "catching_up" {
            catching_up += 1;
        }
        status == 200
    });
    assert!(ready, "eu became ready: {}", eu.log_text());
    let held = r.dump(1, "big").map_or(0, |d| d.len());
    assert_eq!(
        held, POINTS,
        "ready with the whole backlog ({catching_up} probes said catching_up)"
    );
}

#[test]
fn a_region_whose_redis_is_down_keeps_serving_and_publishes_its_backlog_when_it_returns() {
    let mut r = Regions::start(&["us", "eu"], true);
    create(r.server(0), "d");
    upsert(r.server(0), "d", vec![point("before", vec![0.0; 4], "us")]);
    r.converged("d", Some(1), WAIT);
    // A frozen Redis (SIGSTOP: connections hang instead of failing) refuses no write either,
    // rate limits included (their regional leases cannot be refilled meanwhile).
    r.redis[0].pause();
    for k in 0..150 {
        let (status, body) = r.server(0).call(
            "PUT",
            "/api/v1/collections/d/points",
            Some(&json!({"points": [point(&format!("frozen-{k}"), vec![k as f32, 1.0, 0.0, 0.0], "us")]})),
        );
        assert_eq!(status, 200, "{body}");
    }
    // Reads come faster than a refill's timeout: several leases' worth while it hangs.
    for _ in 0..400 {
        let (status, body) = get(r.server(0), "d", "frozen-7");
        assert_eq!(status, 200, "{body}");
    }
    r.redis[0].resume();
    r.converged("d", Some(151), Duration::from_secs(15));
    r.redis[0].kill();
    // Local reads and writes go on while the region's Redis is gone.
    let pts = (0..100)
        .map(|k| point(&format!("during-{k}"), vec![k as f32, 0.0, 0.0, 1.0], "us"))
        .collect();
    upsert(r.server(0), "d", pts);
    assert_eq!(get(r.server(0), "d", "during-7").0, 200);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        get(r.server(1), "d", "during-7").0,
        404,
        "nothing can travel yet"
    );
    r.redis[0].restart();
    r.converged("d", Some(251), Duration::from_secs(15));
}

#[test]
fn a_peer_redis_restarted_without_persistence_makes_the_reader_resync_in_full() {
    let mut r = Regions::start(&["us", "eu"], false);
    create(r.server(0), "e");
    upsert(r.server(0), "e", vec![point("a", vec![0.0; 4], "us")]);
    upsert(r.server(0), "e", vec![point("gone", vec![3.0; 4], "us")]);
    r.converged("e", Some(2), WAIT);
    // eu is away while us writes and deletes; then us's Redis loses its stream (no persistence).
    r.kill9(1);
    upsert(r.server(0), "e", vec![point("missed", vec![1.0; 4], "us")]);
    let (status, _) = r
        .server(0)
        .call("DELETE", "/api/v1/collections/e/points/gone", None);
    assert_eq!(status, 200);
    assert!(wait_for(WAIT, || r
        .server(0)
        .metric("ruvector_region_published_total", &[])
        >= 4.0));
    r.redis[0].kill();
    r.redis[0].restart();
    // A write after the restart gives the stream a new epoch.
    upsert(r.server(0), "e", vec![point("after", vec![2.0; 4], "us")]);
    r.start_region(1);
    // The delete eu missed reaches it through the resync's tombstones: "gone" is gone there too.
    r.converged("e", Some(3), Duration::from_secs(15));
    assert_eq!(get(r.server(1), "e", "gone").0, 404);
    let s = r.server(1);
    assert!(s.metric("ruvector_region_resyncs_total", &["peer=\"us\""]) >= 1.0);
    assert!(s.log_text().contains("resync"), "the resync is logged");
}

#[test]
fn a_collection_delete_replicates_and_a_later_write_elsewhere_survives_it() {
    let r = Regions::start(&["us", "eu", "ap"], true);
    create(r.server(0), "dc");
    let pts: Vec<Value> = (0..50)
        .map(|i| point(&format!("p{i}"), vec![i as f32; 4], "us"))
        .collect();
    upsert(r.server(0), "dc", pts);
    r.converged("dc", Some(50), WAIT);
    // A plain delete reaches every region.
    let (status, _) = r.server(0).call("DELETE", "/api/v1/collections/dc", None);
    assert_eq!(status, 204);
    for i in 1..3 {
        assert!(
            wait_for(WAIT, || r
                .server(i)
                .call("GET", "/api/v1/collections/dc", None)
                .0
                == 404),
            "the delete reached {}",
            r.names[i]
        );
    }
    // Again, but us cannot publish for a while: eu writes after the delete, before it hears of
    // it. The later write wins everywhere; everything older than the delete is gone everywhere.
    create(r.server(0), "dc");
    let pts: Vec<Value> = (0..20)
        .map(|i| point(&format!("q{i}"), vec![i as f32; 4], "us"))
        .collect();
    upsert(r.server(0), "dc", pts);
    r.converged("dc", Some(20), WAIT);
    r.redis[0].pause();
    let (status, _) = r.server(0).call("DELETE", "/api/v1/collections/dc", None);
    assert_eq!(
        status, 204,
        "a delete is acknowledged while Redis is frozen"
    );
    std::thread::sleep(Duration::from_millis(50));
    upsert(r.server(1), "dc", vec![point("late", vec![9.0; 4], "eu")]);
    std::thread::sleep(Duration::from_millis(500));
    r.redis[0].resume();
    let dump = r.converged("dc", Some(1), Duration::from_secs(15));
    assert_eq!(dump[0]["id"], "late");
}
