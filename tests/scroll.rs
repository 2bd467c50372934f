//! Scroll/export: `GET /api/v1/collections/{c}/points?limit=&cursor=` pages through every point
//! in bytewise id order across shards, bounded per page, with each point's version.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::Server;
use serde_json::{json, Value};

/// Every page from the start, following `next_cursor`: the points in order.
fn dump(s: &Server, collection: &str, limit: usize) -> (Vec<Value>, usize) {
    let mut points = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("/api/v1/collections/{collection}/points?limit={limit}");
        if let Some(c) = &cursor {
            path.push_str("&cursor=");
            path.push_str(&urlencode(c));
        }
        let page = s.ok("GET", &path, None);
        pages += 1;
        let got = page["points"].as_array().expect("points");
        assert!(got.len() <= limit, "a page holds at most limit points");
        points.extend(got.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => {
                assert!(page["next_cursor"].is_null());
                return (points, pages);
            }
        }
        assert!(pages < 10_000, "paging does not end");
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn paging_returns_every_point_once_in_bytewise_id_order_across_shards() {
    let s = Server::start(&[]);
    s.ok(
        "PUT",
        "/api/v1/collections/exp",
        Some(&json!({"dimension": 3, "metric": "l2", "shards": 3})),
    );
    // Ids whose bytewise order differs from a numeric or case-folded one, and non-ASCII ones.
    let mut expected: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for i in 0..1_234 {
        let id = match i % 4 {
            0 => format!("{i}"),
            1 => format!("Doc-{i}"),
            2 => format!("doc/{i}"),
            _ => format!("é{i}✓"),
        };
        expected.insert(id, vec![i as f32, (i % 7) as f32, 1.0]);
    }
    let points: Vec<Value> = expected
        .iter()
        .map(|(id, v)| json!({"id": id, "vector": v, "metadata": {"n": v[0]}}))
        .collect();
    for chunk in points.chunks(500) {
        s.ok(
            "PUT",
            "/api/v1/collections/exp/points",
            Some(&json!({ "points": chunk })),
        );
    }
    // Deleted points are not exported; a replaced one shows its latest version.
    let deleted = expected.keys().nth(10).unwrap().clone();
    s.ok(
        "DELETE",
        &format!("/api/v1/collections/exp/points/{}", urlencode(&deleted)),
        None,
    );
    expected.remove(&deleted);
    let replaced = expected.keys().nth(20).unwrap().clone();
    let (_, before) = {
        let (p, _) = dump(&s, "exp", 256);
        let v = p
            .into_iter()
            .find(|p| p["id"] == replaced.as_str())
            .unwrap();
        ((), v["version"]["ts"].as_u64().unwrap())
    };
    s.ok(
        "PUT",
        "/api/v1/collections/exp/points",
        Some(&json!({"points": [{"id": replaced, "vector": [9.0, 9.0, 9.0]}]})),
    );
    expected.insert(replaced.clone(), vec![9.0, 9.0, 9.0]);

    let (got, pages) = dump(&s, "exp", 100);
    assert_eq!(pages, expected.len().div_ceil(100));
    let ids: Vec<&str> = got.iter().map(|p| p["id"].as_str().unwrap()).collect();
    let want: Vec<&str> = expected.keys().map(String::as_str).collect();
    assert_eq!(ids, want, "every live point once, bytewise ascending");
    for p in &got {
        let v: Vec<f32> = serde_json::from_value(p["vector"].clone()).unwrap();
        assert_eq!(&v, &expected[p["id"].as_str().unwrap()]);
        // The replication version: origin time, region, instance, version vector.
        assert!(p["version"]["ts"].as_u64().is_some(), "{p}");
        assert!(
            p["version"]["region"].is_string() && p["version"]["vv"].is_object(),
            "{p}"
        );
    }
    let r = got.iter().find(|p| p["id"] == replaced.as_str()).unwrap();
    assert!(r["version"]["ts"].as_u64().unwrap() > before);
    assert!(r.get("metadata").is_none(), "replaced without metadata");
    let other = got.iter().find(|p| p["id"] != replaced.as_str()).unwrap();
    assert!(other["metadata"]["n"].is_number());
}

#[test]
fn pages_are_bounded_and_bad_cursors_are_refused() {
    let s = Server::start(&[]);
    s.ok(
        "PUT",
        "/api/v1/collections/big",
        Some(&json!({"dimension": 2, "metric": "l2"})),
    );
    let points: Vec<Value> = (0..600)
        .map(|i| json!({"id": format!("{i:04}"), "vector": [i as f32, 1.0]}))
        .collect();
    s.ok(
        "PUT",
        "/api/v1/collections/big/points",
        Some(&json!({ "points": points })),
    );
    // A limit above index.max_page_points (256) is lowered to it.
    let page = s.ok("GET", "/api/v1/collections/big/points?limit=100000", None);
    assert_eq!(page["points"].as_array().unwrap().len(), 256);
    assert_eq!(page["next_cursor"], "0255");
    // Default page, then from a cursor that is not an id in the collection.
    let page = s.ok("GET", "/api/v1/collections/big/points", None);
    assert_eq!(page["points"].as_array().unwrap().len(), 100);
    let page = s.ok("GET", "/api/v1/collections/big/points?cursor=0599a", None);
    assert_eq!(page["points"].as_array().unwrap().len(), 0);
    assert!(page["next_cursor"].is_null());
    let page = s.ok(
        "GET",
        "/api/v1/collections/big/points?cursor=05&limit=3",
        None,
    );
    let ids: Vec<&str> = page["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["0500", "0501", "0502"]);
    for bad in [
        "/api/v1/collections/big/points?cursor=%01x",
        "/api/v1/collections/big/points?limit=-1",
        "/api/v1/collections/big/points?limit=ten",
        "/api/v1/collections/big/points?colour=red",
    ] {
        let (st, e) = s.call("GET", bad, None);
        assert_eq!(st, 400, "{bad}: {e}");
        assert_eq!(e["error"]["code"], "invalid_argument", "{bad}: {e}");
    }
    let long = "x".repeat(300);
    let (st, e) = s.call(
        "GET",
        &format!("/api/v1/collections/big/points?cursor={long}"),
        None,
    );
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (400, Some("invalid_argument"))
    );
    let (st, e) = s.call("GET", "/api/v1/collections/nope/points", None);
    assert_eq!((st, e["error"]["code"].as_str()), (404, Some("not_found")));
}

#[test]
fn deleted_pages_list_every_tombstone_once_in_id_order_with_its_version() {
    let s = Server::start(&[("RUVECTOR__INDEX__DEFAULT_SHARDS", "3")]);
    s.ok(
        "PUT",
        "/api/v1/collections/d",
        Some(&json!({"dimension": 2})),
    );
    let points: Vec<Value> = (0..30)
        .map(|i| json!({"id": format!("k{i:02}"), "vector": [i as f32, 1.0]}))
        .collect();
    s.ok(
        "PUT",
        "/api/v1/collections/d/points",
        Some(&json!({ "points": points })),
    );
    let deleted: Vec<String> = (0..30).step_by(3).map(|i| format!("k{i:02}")).collect();
    for id in &deleted {
        s.ok(
            "DELETE",
            &format!("/api/v1/collections/d/points/{id}"),
            None,
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/api/v1/collections/d/points?deleted=true&limit=4".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = s.ok("GET", &path, None);
        let got = page["deleted"].as_array().unwrap();
        assert!(got.len() <= 4);
        for g in got {
            assert!(g["version"]["ts"].as_u64().is_some(), "{g}");
            seen.push(g["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, deleted, "every tombstone once, in id order");
    // The points page does not show them.
    let (points, _) = dump(&s, "d", 100);
    assert_eq!(points.len(), 20);
}
