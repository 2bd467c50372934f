//! Acknowledged writes survive `kill -9`; a restart loads snapshots instead of rebuilding the
//! graph; a damaged log tail is truncated and everything before it is served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{clustered, Server};
use serde_json::{json, Value};

const DIM: usize = 16;

#[test]
fn acknowledged_writes_survive_kill_9_and_restart_loads_snapshots() {
    // Small snapshot threshold so the kill lands after snapshots, with a log tail after them.
    let env = [("RUVECTOR__STORAGE__SNAPSHOT_MAX_OPS", "700")];
    let mut s = Server::start(&env);
    s.ok(
        "PUT",
        "/api/v1/collections/k",
        Some(&json!({"dimension": DIM, "shards": 2})),
    );
    let data = clustered(100_000, DIM, 20, 0.3, 3);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3usize {
        let (base, acked, stop, data) = (s.base.clone(), acked.clone(), stop.clone(), data.clone());
        writers.push(std::thread::spawn(move || {
            let c = common::client();
            let mut batch = 0usize;
            while !stop.load(Ordering::Relaxed) && batch < 1000 {
                let ids: Vec<String> = (0..10).map(|i| format!("w{w}-b{batch}-{i}")).collect();
                let points: Vec<Value> = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| json!({"id": id, "vector": data[(w * 30_000 + batch * 10 + i) % data.len()], "metadata": {"w": w}}))
                    .collect();
                let res = c
                    .put(format!("{base}/api/v1/collections/k/points"))
                    .json(&json!({ "points": points }))
                    .send();
                match res {
                    Ok(r) if r.status() == 200 => acked.lock().unwrap().extend(ids),
                    _ => break, // the server died mid-request: not acknowledged
                }
                batch += 1;
            }
        }));
    }
    // Let enough writes through for several snapshots, then kill mid-stream.
    while acked.lock().unwrap().len() < 6_000 {
        std::thread::sleep(Duration::from_millis(20));
    }
    s.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let dir = s.dir.clone();
    let s2 = Server::start_in(&dir, &env, 1);
    let count = s2.ok("GET", "/api/v1/collections/k", None)["count"]
        .as_u64()
        .unwrap() as usize;
    assert!(
        count >= acked.len(),
        "{count} points after restart, {} acknowledged",
        acked.len()
    );
    for id in &acked {
        let (st, _) = s2.call("GET", &format!("/api/v1/collections/k/points/{id}"), None);
        assert_eq!(st, 200, "acknowledged {id} lost");
    }
    // Both shards loaded their graph from a snapshot (no rebuild), then replayed a tail.
    assert_eq!(
        s2.metric("ruvector_shard_loads_total", &["graph=\"snapshot\""]),
        2.0,
        "{}",
        s2.log_text()
    );
    assert_eq!(
        s2.metric("ruvector_shard_loads_total", &["graph=\"rebuilt\""]),
        0.0
    );
    // And it searches correctly after the restart.
    let q = &data[5];
    let r = s2.ok(
        "POST",
        "/api/v1/collections/k/points/search",
        Some(&json!({"vector": q, "k": 5, "filter": {"w": 1}})),
    );
    assert_eq!(r["results"].as_array().unwrap().len(), 5);
}

#[test]
fn damaged_log_tail_is_truncated_and_the_rest_is_served() {
    let mut s = Server::start(&[]);
    s.ok(
        "PUT",
        "/api/v1/collections/t",
        Some(&json!({"dimension": DIM, "shards": 1})),
    );
    let data = clustered(300, DIM, 5, 0.3, 5);
    for (i, v) in data.iter().enumerate() {
        s.ok(
            "PUT",
            "/api/v1/collections/t/points",
            Some(&json!({"points": [{"id": format!("p{i}"), "vector": v}]})),
        );
    }
    s.kill9();
    // Damage the last bytes of the newest log segment: the last record (p299) is torn.
    let shard = s.dir.join("data/collections/t/shard-0");
    let mut logs: Vec<_> = std::fs::read_dir(&shard)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            // More than the 8-byte segment header.
            p.extension().is_some_and(|e| e == "log") && std::fs::metadata(p).unwrap().len() > 8
        })
        .collect();
    logs.sort();
    let log = logs.pop().expect("a non-empty log segment");
    let mut bytes = std::fs::read(&log).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n - 4..] {
        *b ^= 0xA5;
    }
    std::fs::write(&log, &bytes).unwrap();

    let dir = s.dir.clone();
    let s2 = Server::start_in(&dir, &[], 1);
    assert_eq!(s2.ok("GET", "/api/v1/collections/t", None)["count"], 299);
    let (st, _) = s2.call("GET", "/api/v1/collections/t/points/p299", None);
    assert_eq!(st, 404);
    for i in [0, 150, 298] {
        s2.ok("GET", &format!("/api/v1/collections/t/points/p{i}"), None);
    }
    assert_eq!(s2.metric("ruvector_wal_truncations_total", &[]), 1.0);
    assert!(s2.log_text().contains("torn tail of the write log cut off"));
    let kept: Vec<_> = std::fs::read_dir(&shard)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".torn-"))
        .collect();
    assert_eq!(kept.len(), 1, "the cut bytes are kept beside the segment");
    let r = s2.ok(
        "POST",
        "/api/v1/collections/t/points/search",
        Some(&json!({"vector": data[10], "k": 1})),
    );
    assert_eq!(r["results"][0]["id"], "p10");
    // New writes after the truncation are durable too.
    s2.ok(
        "PUT",
        "/api/v1/collections/t/points",
        Some(&json!({"points": [{"id": "after", "vector": data[0]}]})),
    );
}
