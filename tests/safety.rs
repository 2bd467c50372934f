//! Safety: no request crashes a shard or bricks a restart, no encoded path bypasses a scope,
//! and damage on disk is never silently skipped (issue: safety). Default config (shedding and
//! rate limits on) unless a test says why not.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Server;
use serde_json::{json, Value};

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[test]
fn overflowing_dot_vectors_are_refused_and_the_shard_keeps_serving_across_restarts() {
    let mut s = Server::start(&[]);
    s.ok(
        "PUT",
        "/api/v1/collections/p",
        Some(&json!({"dimension": 2, "metric": "dot", "shards": 1})),
    );
    let (st, v) = s.call(
        "PUT",
        "/api/v1/collections/p/points",
        Some(&json!({"points": [{"id": "a", "vector": [1e20, 1e20]}, {"id": "b", "vector": [1e20, -1e20]}]})),
    );
    assert_eq!((st, code(&v)), (400, "invalid_argument"), "{v}");
    // The same on every other write path and on queries.
    for metric in ["l2", "cosine"] {
        let name = format!("q{metric}");
        s.ok(
            "PUT",
            &format!("/api/v1/collections/{name}"),
            Some(&json!({"dimension": 2, "metric": metric})),
        );
        let (st, _) = s.call(
            "PUT",
            &format!("/api/v1/collections/{name}/points"),
            Some(&json!({"points": [{"id": "a", "vector": [3e19, 1.0]}]})),
        );
        assert_eq!(st, 400, "{metric}: a norm past the bound is refused");
    }
    let (st, _) = s.call(
        "POST",
        "/api/v1/insert",
        Some(&json!({"collection": "p", "vector": [1e20, 1e20]})),
    );
    assert_eq!(st, 400);
    let (st, _) = s.call(
        "POST",
        "/api/v1/collections/p/points/search",
        Some(&json!({"vector": [1e20, -1e20], "k": 1})),
    );
    assert_eq!(st, 400);
    // The shard still takes writes and answers searches.
    s.ok(
        "PUT",
        "/api/v1/collections/p/points",
        Some(&json!({"points": [{"id": "c", "vector": [1, 1]}, {"id": "d", "vector": [1e18, 1e18]}]})),
    );
    let hits = s.ok(
        "POST",
        "/api/v1/collections/p/points/search",
        Some(&json!({"vector": [1, 1], "k": 2})),
    );
    assert_eq!(hits["results"].as_array().unwrap().len(), 2);
    s.kill9();
    let dir = s.dir.clone();
    let s2 = Server::start_in(&dir, &[], 1);
    assert_eq!(s2.ok("GET", "/api/v1/collections/p", None)["count"], 2);
    s2.ok(
        "PUT",
        "/api/v1/collections/p/points",
        Some(&json!({"points": [{"id": "e", "vector": [2, 1]}]})),
    );
}

/// A server with auth on: `reader` holds only `read`, `admin` holds everything.
fn with_auth() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[auth]\nmetrics_admin = true\nkeys = [\n  {{ name = \"reader\", sha256 = \"{}\", scopes = [\"read\"] }},\n  {{ name = \"admin\", sha256 = \"{}\", scopes = [\"read\", \"write\", \"admin\"] }},\n]\n",
        common::sha256_hex("key-reader"),
        common::sha256_hex("key-admin")
    );
    let path = dir.path().join("auth.toml");
    std::fs::write(&path, text).unwrap();
    let s = Server::start(&[("RUVECTOR_CONFIG", path.to_str().unwrap())]);
    (s, dir)
}

fn status_of(s: &Server, method: &str, path: &str, token: &str, body: Option<&Value>) -> u16 {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = common::client()
        .request(m, s.url(path))
        .header("authorization", format!("Bearer {token}"));
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    req.send().unwrap().status().as_u16()
}

#[test]
fn percent_encoded_paths_get_the_same_answer_as_their_plain_form() {
    let (s, _cfg) = with_auth();
    let admin = "key-admin";
    let reader = "key-reader";
    let create = json!({"dimension": 2});
    assert_eq!(
        status_of(&s, "PUT", "/api/v1/collections/docs", admin, Some(&create)),
        201
    );
    let point =
        json!({"points": [{"id": "search", "vector": [1, 0]}, {"id": "x", "vector": [0, 1]}]});
    assert_eq!(
        status_of(
            &s,
            "PUT",
            "/api/v1/collections/docs/points",
            admin,
            Some(&point)
        ),
        200
    );
    let patch = json!({"metadata": {"a": 1}});
    let insert = json!({"collection": "docs", "id": "y", "vector": [1, 1]});
    let cases: Vec<(&str, &str, &str, Option<&Value>)> = vec![
        (
            "DELETE",
            "/api/v1/collections/docs",
            "/api/v1/%63ollections/docs",
            None,
        ),
        (
            "PUT",
            "/api/v1/collections/docs/points",
            "/api/v1/%63ollections/docs/points",
            Some(&point),
        ),
        (
            "PUT",
            "/api/v1/collections/new",
            "/api/v1/%63ollections/new",
            Some(&create),
        ),
        ("POST", "/api/v1/insert", "/api/v1/%69nsert", Some(&insert)),
        ("GET", "/metrics", "/%6detrics", None),
        (
            "DELETE",
            "/api/v1/collections/docs/points/search",
            "/api/v1/collections/docs/points/%73earch",
            None,
        ),
        (
            "PATCH",
            "/api/v1/collections/docs/points/search",
            "/api/v1/collections/docs/points/%73earch",
            Some(&patch),
        ),
        (
            "DELETE",
            "/api/v1/collections/docs/points/x",
            "/api/v1/collections/docs/%70oints/x",
            None,
        ),
    ];
    for (method, plain, encoded, body) in &cases {
        let a = status_of(&s, method, plain, reader, *body);
        let b = status_of(&s, method, encoded, reader, *body);
        assert_eq!(a, 403, "{method} {plain} with a read-only key");
        assert_eq!(b, a, "{method} {encoded} must be answered like {plain}");
    }
    // Nothing was changed by the reader.
    let docs = s.call("GET", "/api/v1/collections/docs", None);
    assert_eq!(docs.0, 401, "auth is on");
    assert_eq!(
        status_of(
            &s,
            "GET",
            "/api/v1/collections/docs/points/search",
            reader,
            None
        ),
        200,
        "the point whose id is `search` is still there"
    );
    assert_eq!(
        status_of(&s, "GET", "/api/v1/collections/docs/points/x", reader, None),
        200
    );
    // A percent-encoded stream path is gated like the plain one (stream quota included).
    let a = status_of(
        &s,
        "GET",
        "/api/v1/stream/subscribe?collection=nope",
        "wrong-key",
        None,
    );
    let b = status_of(
        &s,
        "GET",
        "/api/v1/%73tream/subscribe?collection=nope",
        "wrong-key",
        None,
    );
    assert_eq!((a, b), (401, 401));
    // Unknown routes are 404 before any handler, with or without credentials.
    assert_eq!(
        status_of(&s, "GET", "/api/v1/nothing", "wrong-key", None),
        404
    );
    assert_eq!(
        status_of(&s, "POST", "/api/v1/collections", admin, None),
        404
    );
}

#[test]
fn an_encoded_websocket_path_is_refused_not_routed_elsewhere() {
    use std::io::{Read, Write};
    let s = Server::start(&[]);
    for path in ["/api/v1/ws", "/api/v1/%77s"] {
        let mut c = std::net::TcpStream::connect(s.addr()).unwrap();
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut buf = [0u8; 12];
        c.read_exact(&mut buf).unwrap();
        let line = String::from_utf8_lossy(&buf).to_string();
        if path.contains('%') {
            assert_eq!(line, "HTTP/1.1 400", "{path}");
        } else {
            assert_eq!(line, "HTTP/1.1 101", "{path}");
        }
    }
}

/// A raw WebSocket client: the upgrade by hand, so tests can send what a library would not.
fn raw_ws(s: &Server) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        c,
        "GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    c
}

/// A masked client frame.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [7u8, 13, 42, 99];
    let mut f = vec![0x80 | opcode];
    assert!(payload.len() < 126);
    f.push(0x80 | payload.len() as u8);
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    f
}

/// Reads server frames until a close frame; its status code.
fn close_code_of(c: &mut std::net::TcpStream) -> u16 {
    use std::io::Read;
    loop {
        let mut h = [0u8; 2];
        c.read_exact(&mut h).unwrap();
        let mut len = (h[1] & 0x7f) as usize;
        if len == 126 {
            let mut l = [0u8; 2];
            c.read_exact(&mut l).unwrap();
            len = u16::from_be_bytes(l) as usize;
        } else if len == 127 {
            let mut l = [0u8; 8];
            c.read_exact(&mut l).unwrap();
            len = u64::from_be_bytes(l) as usize;
        }
        let mut p = vec![0u8; len];
        c.read_exact(&mut p).unwrap();
        if h[0] & 0x0f == 8 {
            return u16::from_be_bytes([p[0], p[1]]);
        }
    }
}

#[test]
fn websocket_protocol_edges_close_with_the_right_codes() {
    use std::io::Write;
    let s = Server::start(&[]);
    // Invalid UTF-8 in a text frame: 1007.
    let mut c = raw_ws(&s);
    c.write_all(&frame(1, b"{\"type\":\"ping\",\"x\":\"\xff\xfe\"}"))
        .unwrap();
    assert_eq!(close_code_of(&mut c), 1007);
    // A close frame with a code that must never be sent (1005, 1006, 0): never echoed.
    for bad in [1005u16, 1006, 0, 1015, 2999] {
        let mut c = raw_ws(&s);
        c.write_all(&frame(8, &bad.to_be_bytes())).unwrap();
        assert_eq!(close_code_of(&mut c), 1002, "peer sent {bad}");
    }
    // A valid code is echoed.
    let mut c = raw_ws(&s);
    c.write_all(&frame(8, &4000u16.to_be_bytes())).unwrap();
    assert_eq!(close_code_of(&mut c), 4000);
    // An unmasked frame is refused as soon as its header is read (no payload ever sent).
    let mut c = raw_ws(&s);
    c.write_all(&[0x81, 126, 0xff, 0xff]).unwrap();
    assert_eq!(close_code_of(&mut c), 1002);
    // A huge declared frame is refused at its header: 1009.
    let mut c = raw_ws(&s);
    c.write_all(&[0x81, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4])
        .unwrap();
    assert_eq!(close_code_of(&mut c), 1009);
}
