//! Every logged write carries its stamp — origin time (ns), region, instance — which replication
//! orders concurrent writes by; stamped logs replay as before.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Server;
use ruvector_actors::storage::record::{decode, Decoded, Format};
use serde_json::json;

#[test]
fn every_logged_write_carries_origin_time_region_and_instance() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("REGION", "eu"), ("RUVECTOR__SERVER__INSTANCE_ID", "eu-1")];
    let mut s = Server::start_in(dir.path(), &env, 0);
    s.ok(
        "PUT",
        "/api/v1/collections/st",
        Some(&json!({"dimension": 2, "metric": "l2", "shards": 1})),
    );
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for i in 0..5 {
        s.ok(
            "PUT",
            "/api/v1/collections/st/points",
            Some(&json!({"points": [{"id": format!("p{i}"), "vector": [i as f32, 1.0]}]})),
        );
    }
    s.ok("DELETE", "/api/v1/collections/st/points/p0", None);
    s.kill9();

    let shard = dir.path().join("data/collections/st/shard-0");
    let mut stamps = Vec::new();
    for entry in std::fs::read_dir(&shard).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("wal-")
        {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let (format, mut pos) = Format::of_segment(&data);
        while let Decoded::Record {
            seq, version, len, ..
        } = decode(format, &data[pos..])
        {
            stamps.push((seq, version.expect("a stamped record")));
            pos += len;
        }
    }
    stamps.sort_by_key(|(seq, _)| *seq);
    assert_eq!(stamps.len(), 6, "five upserts and a delete");
    for w in stamps.windows(2) {
        assert!(w[1].1.ts > w[0].1.ts, "{w:?}");
    }
    for (_, st) in &stamps {
        assert_eq!((st.region.as_ref(), st.instance.as_ref()), ("eu", "eu-1"));
        assert!(st.ts >= before && st.ts < before + 60_000_000_000);
    }
    // The stamped log replays after kill -9.
    let s = Server::start_in(dir.path(), &env, 1);
    assert_eq!(s.ok("GET", "/api/v1/collections/st", None)["count"], 4);
}
