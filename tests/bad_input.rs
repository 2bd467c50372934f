//! Every bad request gets the contract's code and status, never a panic, and the server keeps
//! serving correct results afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Server;
use serde_json::json;

#[test]
fn bad_requests_get_clear_errors_and_the_server_survives() {
    let s = Server::start(&[
        ("RUVECTOR__INDEX__MAX_K", "100"),
        ("RUVECTOR__SERVER__MAX_BODY_BYTES", "1048576"),
    ]);
    s.ok(
        "PUT",
        "/api/v1/collections/good",
        Some(&json!({"dimension": 3})),
    );
    s.ok(
        "PUT",
        "/api/v1/collections/good/points",
        Some(&json!({"points": [
            {"id": "a", "vector": [1, 0, 0], "metadata": {"t": 1}},
            {"id": "b", "vector": [0, 1, 0], "metadata": {"t": 2}}
        ]})),
    );
    let search = "/api/v1/collections/good/points/search";
    let points = "/api/v1/collections/good/points";
    let long_name = format!("/api/v1/collections/{}", "n".repeat(65));
    let big = vec![b' '; 10 << 20];
    let mut big_json = b"{\"points\":[".to_vec();
    big_json.extend_from_slice(&big);
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "POST",
            search,
            b"{not json".to_vec(),
            400,
            "invalid_argument",
        ),
        ("POST", search, b"".to_vec(), 400, "invalid_argument"),
        ("POST", search, b"[1,2,3]".to_vec(), 400, "invalid_argument"),
        (
            "POST",
            search,
            br#"{"vector":"abc","k":1}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            search,
            br#"{"vector":[1,0,NaN],"k":1}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            search,
            br#"{"vector":[1,0,Infinity],"k":1}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            search,
            br#"{"vector":[1,0,1e39],"k":1}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            search,
            br#"{"vector":[],"k":1}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            search,
            br#"{"vector":[1,0],"k":1}"#.to_vec(),
            400,
            "dimension_mismatch",
        ),
        (
            "POST",
            search,
            br#"{"vector":[1,0,0],"k":0}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            search,
            br#"{"vector":[1,0,0],"k":101}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            search,
            br#"{"vector":[1,0,0],"k":-3}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            search,
            br#"{"vector":[1,0,0],"k":"ten"}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            search,
            br#"{"k":3}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            search,
            br#"{"vector":[1,0,0],"id":"a"}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            search,
            br#"{"vector":[0,0,0]}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            search,
            br#"{"vector":[1,0,0],"filter":{"must":"x"}}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            search,
            br#"{"vector":[1,0,0],"filter":{"must":[{"key":"t","range":{"gt":"a"}}]}}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            search,
            br#"{"vector":[1,0,0],"filter":[1]}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            search,
            br#"{"vector":[1,0,0],"ef_search":0}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            search,
            br#"{"id":"nope"}"#.to_vec(),
            404,
            "not_found",
        ),
        (
            "POST",
            "/api/v1/collections/missing/points/search",
            br#"{"vector":[1,0,0]}"#.to_vec(),
            404,
            "not_found",
        ),
        ("PUT", points, big_json, 413, "payload_too_large"),
        (
            "PUT",
            points,
            br#"{"points":[{"id":"x","vector":[1,0]}]}"#.to_vec(),
            400,
            "dimension_mismatch",
        ),
        (
            "PUT",
            points,
            br#"{"points":[{"id":7,"vector":[1,0,0]}]}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "PUT",
            points,
            format!(
                r#"{{"points":[{{"id":"{}","vector":[1,0,0]}}]}}"#,
                "x".repeat(300)
            )
            .into_bytes(),
            400,
            "invalid_argument",
        ),
        (
            "PUT",
            points,
            br#"{"points":[{"id":"","vector":[1,0,0]}]}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "PUT",
            points,
            br#"{"points":[{"id":"m","vector":[1,0,0],"metadata":[1]}]}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "PUT",
            points,
            br#"{"points":[]}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "PUT",
            points,
            br#"{"points":[{"id":"ok","vector":[1,0,0]},{"id":"bad","vector":[1,0]}]}"#.to_vec(),
            400,
            "dimension_mismatch",
        ),
        (
            "PUT",
            "/api/v1/collections/bad%20name",
            br#"{"dimension":3}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "PUT",
            &long_name,
            br#"{"dimension":3}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "PUT",
            "/api/v1/collections/zero",
            br#"{"dimension":0}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "PUT",
            "/api/v1/collections/metric",
            br#"{"dimension":3,"metric":"hamming"}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "PUT",
            "/api/v1/collections/hn",
            br#"{"dimension":3,"hnsw":{"m":1}}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "PUT",
            "/api/v1/collections/good",
            br#"{"dimension":4}"#.to_vec(),
            409,
            "already_exists",
        ),
        (
            "PATCH",
            "/api/v1/collections/good/points/a",
            br#"{"metadata":5}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "DELETE",
            "/api/v1/collections/good/points/ghost",
            vec![],
            404,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/search?collection=good&query_vector_id=a&k=abc",
            vec![],
            400,
            "invalid_argument",
        ),
        (
            "GET",
            "/api/v1/search?collection=good&k=3",
            vec![],
            400,
            "invalid_argument",
        ),
        ("GET", "/api/v1/nowhere", vec![], 404, "not_found"),
        (
            "POST",
            "/api/v1/insert",
            br#"{"vector":[1,0,0],"vectors":[]}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/v1/collections/good/points/search/batch",
            br#"{"searches":[]}"#.to_vec(),
            400,
            "invalid_argument",
        ),
    ];
    assert!(cases.len() >= 25);
    for (method, path, body, status, code) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).to_string();
        let (st, v) = s.raw(method, path, body);
        assert_eq!(st, status, "{method} {path} {shown}: {v}");
        assert_eq!(
            v["error"]["code"].as_str(),
            Some(code),
            "{method} {path} {shown}: {v}"
        );
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // Nothing of the refused batch was written, and the server still answers correctly.
    let (st, _) = s.call("GET", "/api/v1/collections/good/points/ok", None);
    assert_eq!(st, 404, "a request with one bad point writes nothing");
    let r = s.ok(
        "POST",
        search,
        Some(&json!({"vector": [0, 1, 0.1], "k": 5})),
    );
    let ids: Vec<&str> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b", "a"]);
    assert_eq!(s.ok("GET", "/health/live", None)["status"], "alive");
}
