//! Damage on disk is never silently skipped: mid-log damage costs exactly the damaged record
//! (kept aside, counted, logged), a damaged newest snapshot falls back to the previous one
//! without loss, a hole holds its collection back until `repair`, and a crash mid-delete never
//! resurrects half a collection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Server;
use serde_json::json;

const ALWAYS: [(&str, &str); 1] = [("RUVECTOR__STORAGE__FSYNC", "always")];

fn put(s: &Server, c: &str, from: usize, to: usize) {
    for i in from..to {
        s.ok(
            "PUT",
            &format!("/api/v1/collections/{c}/points"),
            Some(&json!({"points": [{"id": format!("p{i}"), "vector": [i as f32, 1.0, 2.0]}]})),
        );
    }
}

fn create(s: &Server, c: &str) {
    s.ok(
        "PUT",
        &format!("/api/v1/collections/{c}"),
        Some(&json!({"dimension": 3, "metric": "l2", "shards": 1})),
    );
}

fn files(dir: &Path, pred: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| pred(&p.file_name().unwrap().to_string_lossy()))
        .collect();
    v.sort();
    v
}

fn count(s: &Server, c: &str) -> u64 {
    s.ok("GET", &format!("/api/v1/collections/{c}"), None)["count"]
        .as_u64()
        .unwrap()
}

#[test]
fn damage_in_the_middle_of_a_log_loses_exactly_that_record_and_keeps_the_evidence() {
    let mut s = Server::start(&ALWAYS);
    create(&s, "m");
    put(&s, "m", 0, 100);
    s.kill9();
    let dir = s.dir.clone();
    let mut s = Server::start_in(&dir, &ALWAYS, 1);
    put(&s, "m", 100, 200);
    s.kill9();
    let shard = dir.join("data/collections/m/shard-0");
    let logs = files(&shard, |n| n.starts_with("wal-") && n.ends_with(".log"));
    assert!(logs.len() >= 2, "two log files: {logs:?}");
    let first = &logs[0];
    let mut bytes = std::fs::read(first).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(first, &bytes).unwrap();

    let s2 = Server::start_in(&dir, &ALWAYS, 2);
    assert_eq!(count(&s2, "m"), 199, "exactly the damaged record is lost");
    // The damage sits mid-way through the first log: the first record and every record of
    // the second log survive.
    for i in [0, 100, 150, 199] {
        s2.ok("GET", &format!("/api/v1/collections/m/points/p{i}"), None);
    }
    assert_eq!(
        std::fs::read(first).unwrap(),
        bytes,
        "the damaged log is not cut"
    );
    assert_eq!(
        files(&shard, |n| n.contains(".damaged-")).len(),
        1,
        "damaged bytes kept aside"
    );
    assert_eq!(s2.metric("ruvector_wal_damaged_records_total", &[]), 1.0);
    let log = s2.log_text();
    assert!(log.contains("write log damaged in the middle"), "{log}");
    assert!(
        log.contains(&first.display().to_string()),
        "the file is named"
    );
}

/// Damages `file` of the newest of two snapshots; the shard must load the older one plus the log.
fn newest_snapshot_damaged_in(file: &str) {
    // Snapshots only at shutdown here (interval and op count out of reach).
    let env = [
        ("RUVECTOR__STORAGE__SNAPSHOT_MAX_OPS", "1000000"),
        ("RUVECTOR__STORAGE__SNAPSHOT_INTERVAL_S", "100000"),
    ];
    let mut s = Server::start(&env);
    create(&s, "snap");
    put(&s, "snap", 0, 60);
    s.terminate();
    let dir = s.dir.clone();
    let mut s = Server::start_in(&dir, &env, 1);
    put(&s, "snap", 60, 120);
    s.terminate();
    let shard = dir.join("data/collections/snap/shard-0");
    let snaps = files(&shard, |n| n.starts_with("snapshot-") && !n.contains('.'));
    assert_eq!(snaps.len(), 2, "the previous snapshot is kept: {snaps:?}");
    let newest = snaps.last().unwrap();
    let target = newest.join(file);
    let mut bytes = std::fs::read(&target).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&target, &bytes).unwrap();

    let s2 = Server::start_in(&dir, &env, 2);
    assert_eq!(count(&s2, "snap"), 120, "{file}: nothing lost");
    assert_eq!(s2.metric("ruvector_snapshot_fallbacks_total", &[]), 1.0);
    assert!(s2.log_text().contains("falling back to an older one"));
    assert!(
        files(&shard, |n| n.ends_with(".damaged")).len() == 1,
        "the damaged snapshot is set aside, not deleted"
    );
    // Every point still answers with its vector (the graph file holds the only copy).
    let r = s2.ok("GET", "/api/v1/collections/snap/points/p119", None);
    assert_eq!(r["vector"], json!([119.0, 1.0, 2.0]), "{r}");
}

#[test]
fn a_damaged_newest_snapshot_falls_back_to_the_previous_one_without_loss() {
    newest_snapshot_damaged_in("points.bin");
}

#[test]
fn a_damaged_graph_file_falls_back_to_the_previous_snapshot_without_loss() {
    newest_snapshot_damaged_in("graph.bin");
}

#[test]
fn a_hole_holds_its_collection_back_until_repair_while_the_others_serve() {
    let mut s = Server::start(&ALWAYS);
    create(&s, "holed");
    create(&s, "fine");
    put(&s, "holed", 0, 30);
    put(&s, "fine", 0, 5);
    s.kill9();
    let dir = s.dir.clone();
    let mut s = Server::start_in(&dir, &ALWAYS, 1);
    put(&s, "holed", 30, 60);
    s.kill9();
    let mut s = Server::start_in(&dir, &ALWAYS, 2);
    put(&s, "holed", 60, 90);
    s.kill9();
    // Lose the middle segment (records 31..=60).
    let shard = dir.join("data/collections/holed/shard-0");
    let logs = files(&shard, |n| n.starts_with("wal-") && n.ends_with(".log"));
    assert!(logs.len() >= 3, "{logs:?}");
    std::fs::remove_file(&logs[1]).unwrap();

    let mut s = Server::start_in(&dir, &ALWAYS, 3);
    let (st, v) = s.call("GET", "/api/v1/collections/holed", None);
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("missing"),
        "{v}"
    );
    let (st, _) = s.call(
        "PUT",
        "/api/v1/collections/holed/points",
        Some(&json!({"points": [{"id": "x", "vector": [1, 2, 3]}]})),
    );
    assert_eq!(st, 503);
    assert_eq!(count(&s, "fine"), 5, "other collections serve");
    s.terminate();

    let out = Command::new(env!("CARGO_BIN_EXE_ruvector-streaming"))
        .args(["repair", "--collection", "holed"])
        .env("RUVECTOR__STORAGE__DATA_DIR", dir.join("data"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("accepted loss: records 31..=60 missing"),
        "{text}"
    );

    let s = Server::start_in(&dir, &ALWAYS, 4);
    assert_eq!(count(&s, "holed"), 60);
    s.ok(
        "PUT",
        "/api/v1/collections/holed/points",
        Some(&json!({"points": [{"id": "new", "vector": [1, 2, 3]}]})),
    );
}

#[test]
fn a_crash_during_delete_never_resurrects_half_a_collection() {
    let mut s = Server::start(&[]);
    create(&s, "gone");
    create(&s, "kept");
    put(&s, "gone", 0, 10);
    put(&s, "kept", 0, 10);
    s.ok(
        "PUT",
        "/api/v1/collections/twoshard",
        Some(&json!({"dimension": 3, "shards": 2})),
    );
    s.terminate();
    let root = s.dir.join("data/collections");
    // Crash after the rename to the trash name, halfway through removing it.
    let trash = root.join(".trash-gone-0000000000000001");
    std::fs::rename(root.join("gone"), &trash).unwrap();
    std::fs::remove_dir_all(trash.join("shard-0")).unwrap();
    // A directory half-deleted in place (as an interrupted in-place delete left it).
    std::fs::remove_dir_all(root.join("twoshard/shard-1")).unwrap();

    let dir = s.dir.clone();
    let s2 = Server::start_in(&dir, &[], 1);
    assert_eq!(s2.call("GET", "/api/v1/collections/gone", None).0, 404);
    assert!(!trash.exists(), "the trash is emptied at start");
    assert_eq!(count(&s2, "kept"), 10);
    let (st, v) = s2.call("GET", "/api/v1/collections/twoshard", None);
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{v}"
    );
    // Deleting it is allowed; then it is absent, and its name can be used again.
    assert_eq!(
        s2.call("DELETE", "/api/v1/collections/twoshard", None).0,
        204
    );
    assert_eq!(s2.call("GET", "/api/v1/collections/twoshard", None).0, 404);
    create(&s2, "twoshard");
    // A normal delete goes through the trash too.
    assert_eq!(s2.call("DELETE", "/api/v1/collections/kept", None).0, 204);
    assert!(files(&root, |n| n.starts_with(".trash-")).is_empty());
    assert!(!root.join("kept").exists());
}
