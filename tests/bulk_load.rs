//! A first user's bulk load and the searches after it are served at the shipped defaults
//! (shedding and rate limits on): a busy server is not an overloaded one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{clustered, Server};
use serde_json::{json, Value};

#[test]
fn a_bulk_load_then_300_searches_are_all_served_at_the_defaults() {
    let s = Server::start(&[]);
    let dim = 50;
    s.ok(
        "PUT",
        "/api/v1/collections/bulk",
        Some(&json!({"dimension": dim})),
    );
    let data = clustered(50_000, dim, 50, 0.4, 11);
    let c = common::client();
    for (b, chunk) in data.chunks(1000).enumerate() {
        let points: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| json!({"id": format!("b{b}-{i}"), "vector": v}))
            .collect();
        let r = c
            .put(s.url("/api/v1/collections/bulk/points"))
            .json(&json!({ "points": points }))
            .send()
            .unwrap();
        let st = r.status();
        assert_eq!(
            st,
            200,
            "batch {b}: {} {}",
            r.text().unwrap_or_default(),
            shed_figures(&s)
        );
    }
    let mut statuses = std::collections::BTreeMap::new();
    for q in data.iter().step_by(data.len() / 300).take(300) {
        let r = c
            .post(s.url("/api/v1/collections/bulk/points/search"))
            .json(&json!({"vector": q, "k": 10}))
            .send()
            .unwrap();
        *statuses.entry(r.status().as_u16()).or_insert(0) += 1;
    }
    assert_eq!(statuses, [(200, 300)].into(), "{}", shed_figures(&s));
    assert_eq!(s.metric("ruvector_shed_level", &[]), 0.0);
}

fn shed_figures(s: &Server) -> String {
    s.metrics()
        .lines()
        .filter(|l| l.starts_with("ruvector_shed") || l.starts_with("ruvector_process_cpu"))
        .collect::<Vec<_>>()
        .join("\n")
}
