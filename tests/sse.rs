//! SSE on its two servers, black box: a connection's first `GET /api/v1/stream/...` is served by
//! the lean connection layer, a later request on a kept-alive connection by actix-web. Both must
//! give the same answers: the same events, the same refusals, the same limits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Server;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Who served an SSE answer: the lean layer closes the connection when the stream ends.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Via {
    Lean,
    Actix,
}

/// Opens `path` on a fresh connection (`Lean`) or after a first request on the same kept-alive
/// connection (`Actix`).
async fn open(s: &Server, path: &str, via: Via, headers: &[(&str, &str)]) -> reqwest::Response {
    // The pooled connection comes back to the client a moment after its first answer is read;
    // a request sent before that opens a new connection (the lean path). Try again then.
    for _ in 0..20 {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        if via == Via::Actix {
            let r = client.get(s.url("/health/live")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut req = client.get(s.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.expect("sse request");
        let close = res
            .headers()
            .get("connection")
            .is_some_and(|v| v.to_str().unwrap().eq_ignore_ascii_case("close"));
        if close == (via == Via::Lean) {
            return res;
        }
    }
    panic!("{path} was never served by {via:?}");
}

/// Reads events (name, id, data) until `want` of them are in, heartbeats skipped.
async fn events(res: &mut reqwest::Response, want: usize) -> Vec<(String, Option<u64>, Value)> {
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < want {
        if let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if block.starts_with(':') {
                continue;
            }
            let (mut name, mut id, mut data) = (String::new(), None, Value::Null);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_owned();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    // `<seq>` or `<seq>.<instance>`: the sequence number.
                    id = v.split('.').next().and_then(|s| s.parse().ok());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).expect("json data");
                }
            }
            out.push((name, id, data));
            continue;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(20), res.chunk())
            .await
            .expect("sse data within 20 s")
            .expect("sse read")
            .expect("sse stream open");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    out
}

/// Drops fields that differ between any two runs (ids of the hub, timings).
fn stable(mut e: (String, Option<u64>, Value)) -> (String, Option<u64>, Value) {
    if let Some(o) = e.2.as_object_mut() {
        o.remove("took_ms");
        o.remove("query_id");
        o.remove("subscription");
        o.remove("seq");
    }
    if e.0 == "event" {
        e.1 = None;
    }
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sse_servers_send_the_same_events_for_searches_and_subscriptions() {
    let s = blocking(|| Server::start(&[]));
    blocking(|| {
        s.ok(
            "PUT",
            "/api/v1/collections/c",
            Some(&json!({"dimension": 2})),
        );
        let pts: Vec<Value> = (0..20)
            .map(
                |i| json!({"id": format!("p{i}"), "vector": [1.0, i as f32], "metadata": {"i": i}}),
            )
            .collect();
        s.ok(
            "PUT",
            "/api/v1/collections/c/points",
            Some(&json!({"points": pts})),
        );
    });
    let search = "/api/v1/stream/search?collection=c&query_vector_id=p3&k=5";
    let mut answers = Vec::new();
    for via in [Via::Lean, Via::Actix] {
        let mut res = open(&s, search, via, &[]).await;
        assert_eq!(res.status(), 200);
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let got = events(&mut res, 7).await;
        assert_eq!(got[0].0, "search_start");
        assert_eq!(got[6].0, "search_complete");
        assert_eq!(got[6].2["total_results"], 5);
        // The search's stream ends after its last event.
        let rest = tokio::time::timeout(Duration::from_secs(5), res.chunk()).await;
        assert!(matches!(rest, Ok(Ok(None))), "{via:?}: {rest:?}");
        answers.push(got.into_iter().map(stable).collect::<Vec<_>>());
    }
    assert_eq!(answers[0], answers[1]);

    let sub = "/api/v1/stream/subscribe?collection=c";
    let mut lean = open(&s, sub, Via::Lean, &[]).await;
    let mut actix = open(&s, sub, Via::Actix, &[]).await;
    let first_lean = events(&mut lean, 1).await;
    let first_actix = events(&mut actix, 1).await;
    assert_eq!(first_lean[0].0, "subscribed");
    assert_eq!(
        stable(first_lean[0].clone()),
        stable(first_actix[0].clone())
    );
    blocking(|| {
        let pts = json!({"points": [{"id": "n", "vector": [0.5, 0.5], "metadata": {"new": true}}]});
        s.ok("PUT", "/api/v1/collections/c/points", Some(&pts));
        s.ok("DELETE", "/api/v1/collections/c/points/p1", None);
    });
    let (a, b) = (events(&mut lean, 2).await, events(&mut actix, 2).await);
    assert_eq!(a[0].1, a[0].2["seq"].as_u64(), "an event's id is its seq");
    assert_eq!(a[0].2["vector_id"], "n");
    assert_eq!(a[1].2["op"], "delete");
    assert_eq!(
        a.into_iter().map(stable).collect::<Vec<_>>(),
        b.into_iter().map(stable).collect::<Vec<_>>()
    );
    // Resuming from an event id on the lean server replays what followed it.
    let mut again = open(
        &s,
        sub,
        Via::Lean,
        &[("Last-Event-ID", &first_lean[0].2["seq"].to_string())],
    )
    .await;
    let replay = events(&mut again, 3).await;
    assert_eq!(replay[0].0, "subscribed");
    assert_eq!(replay[1].2["vector_id"], "n");
    assert_eq!(replay[2].2["op"], "delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sse_servers_refuse_bad_requests_with_the_same_json_errors() {
    let s = blocking(|| Server::start(&[]));
    blocking(|| {
        s.ok(
            "PUT",
            "/api/v1/collections/c",
            Some(&json!({"dimension": 2})),
        )
    });
    /// (path, request headers, status, error code)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], u16, &'a str);
    let cases: [Case; 5] = [
        ("/api/v1/stream/subscribe", &[], 400, "invalid_argument"),
        (
            "/api/v1/stream/subscribe?collection=nope",
            &[],
            404,
            "not_found",
        ),
        (
            "/api/v1/stream/subscribe?collection=c&vector=[1",
            &[],
            400,
            "invalid_argument",
        ),
        (
            "/api/v1/stream/subscribe?collection=c",
            &[("Last-Event-ID", "x")],
            400,
            "invalid_argument",
        ),
        (
            "/api/v1/stream/search?collection=c",
            &[],
            400,
            "invalid_argument",
        ),
    ];
    for (path, headers, status, code) in cases {
        let mut bodies = Vec::new();
        for via in [Via::Lean, Via::Actix] {
            let client = reqwest::Client::new();
            if via == Via::Actix {
                client.get(s.url("/health/live")).send().await.unwrap();
            }
            let mut req = client.get(s.url(path));
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), status, "{path} via {via:?}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], code, "{path} via {via:?}: {body}");
            bodies.push(body);
        }
        assert_eq!(bodies[0], bodies[1], "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lean_sse_server_checks_credentials_and_scopes_like_every_route() {
    let writer = "w-key";
    let digest = common::sha256_hex;
    let keys = format!(
        r#"[{{name="admin",sha256="{}",scopes=["admin"]}},{{name="w",sha256="{}",scopes=["write"]}}]"#,
        digest("a-key"),
        digest(writer)
    );
    let s = blocking(|| Server::start(&[("RUVECTOR__AUTH__KEYS", keys.as_str())]));
    blocking(|| {
        let (st, _) = s.call(
            "PUT",
            "/api/v1/collections/c",
            Some(&json!({"dimension": 2})),
        );
        assert_eq!(st, 401);
    });
    let path = "/api/v1/stream/subscribe?collection=c";
    let ask = |token: Option<&'static str>| {
        let url = s.url(path);
        async move {
            let mut req = reqwest::Client::new().get(url);
            if let Some(t) = token {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            (status, res)
        }
    };
    assert_eq!(ask(None).await.0, 401);
    assert_eq!(ask(Some("wrong")).await.0, 401);
    // A write-only key lacks `read`: refused before any stream starts.
    let (status, res) = ask(Some("w-key")).await;
    assert_eq!(status, 403);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "permission_denied");
    // `?token=` works as on every route (the collection does not exist: 404, past the gate).
    let res = reqwest::get(s.url("/api/v1/stream/subscribe?collection=c&token=a-key"))
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

/// A subscriber that never reads its socket: the server's queue for it is bounded; it ends the
/// stream as a slow consumer and its memory comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lean_sse_subscriber_that_stops_reading_is_ended_and_costs_bounded_memory() {
    let s = blocking(|| {
        Server::start(&[
            ("RUVECTOR__STREAM__MAX_OUTBOUND_BYTES", "262144"),
            // Long enough that only the queue bound can end the stream in this test.
            ("RUVECTOR__STREAM__WRITE_TIMEOUT_MS", "60000"),
        ])
    });
    blocking(|| {
        s.ok(
            "PUT",
            "/api/v1/collections/c",
            Some(&json!({"dimension": 2})),
        )
    });
    let mut sock = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
    // A tiny receive window: the server's writes stall almost at once.
    let sock_ref = socket2::SockRef::from(&sock);
    sock_ref.set_recv_buffer_size(4096).unwrap();
    sock.write_all(b"GET /api/v1/stream/subscribe?collection=c HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 64];
    let n = sock.read(&mut head).await.unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    let mut queued_max = 0.0f64;
    let big = "x".repeat(30_000);
    for round in 0..40 {
        let pts: Vec<Value> = (0..10)
            .map(|i| json!({"id": format!("p{round}-{i}"), "vector": [1.0, i as f32], "metadata": {"pad": big}}))
            .collect();
        let (status, _) = blocking(|| {
            s.call(
                "PUT",
                "/api/v1/collections/c/points",
                Some(&json!({"points": pts})),
            )
        });
        assert_eq!(
            status, 200,
            "writers are never held back by a slow subscriber"
        );
        let queued = blocking(|| s.metric("ruvector_stream_outbound_bytes", &[]));
        queued_max = queued_max.max(queued);
    }
    // 12 MB of events were published; at most the queue's bound was ever held for them.
    assert!(queued_max <= 262_144.0, "{queued_max} bytes queued");
    let ended = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if blocking(|| s.metric("ruvector_stream_slow_consumers_total", &[])) >= 1.0 {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), ended)
        .await
        .expect("the stalled subscriber is ended as a slow consumer");
    let open = async {
        loop {
            if blocking(|| s.metric("ruvector_streams_open", &["kind=\"sse\""])) == 0.0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(15), open)
        .await
        .expect("its slot is given back");
}

#[test]
fn idle_scale_holds_sse_streams_with_heartbeats_and_a_burst_of_large_events() {
    let s = Server::start(&[("RUVECTOR__STREAM__HEARTBEAT_INTERVAL_MS", "200")]);
    let cfg = ruvector_load::streams::IdleScale {
        kind: ruvector_load::streams::StreamKind::Sse,
        server: s.addr(),
        conns: 300,
        sources: vec![[127, 0, 0, 1].into(), [127, 0, 0, 2].into()],
        connect_parallel: 64,
        settle: std::time::Duration::from_millis(800),
        burst_bytes: 50_000,
        recover: std::time::Duration::from_secs(2),
        server_pid: Some(s.pid()),
    };
    let r = ruvector_load::streams::idle_scale(cfg, &|_, _, _| {});
    assert_eq!((r.conns_open, r.connect_failures), (300, 0), "{r:?}");
    assert_eq!(
        r.burst_replies, 300,
        "every subscriber got the large event: {r:?}"
    );
    assert_eq!(r.closed_by_server, 0, "{r:?}");
    assert!(r.bytes_per_idle_stream < 64.0 * 1024.0, "{r:?}");
    // Heartbeats went out on the quiet streams (one sweeper, no timer per stream).
    assert!(s.metric("ruvector_stream_frames_out_total", &["type=\"sse_ping\""]) >= 300.0);
}

/// Raw SSE text until `needle` has arrived.
async fn read_until(res: &mut reqwest::Response, needle: &str) -> String {
    let mut text = String::new();
    while !text.contains(needle) {
        let chunk = tokio::time::timeout(Duration::from_secs(20), res.chunk())
            .await
            .expect("sse data within 20 s")
            .expect("sse read")
            .expect("sse stream open");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_id_names_its_instance_and_another_instances_id_resumes_with_reset() {
    let s = blocking(|| Server::start(&[]));
    blocking(|| {
        s.ok(
            "PUT",
            "/api/v1/collections/c",
            Some(&json!({"dimension": 2})),
        );
    });
    let sub = "/api/v1/stream/subscribe?collection=c";
    for via in [Via::Lean, Via::Actix] {
        let mut res = open(&s, sub, via, &[]).await;
        read_until(&mut res, "event: subscribed").await;
        blocking(|| {
            let pts = json!({"points": [{"id": "p", "vector": [0.5, 0.5]}]});
            s.ok("PUT", "/api/v1/collections/c/points", Some(&pts));
        });
        let text = read_until(&mut res, "event: event").await;
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("id: "))
            .expect("the change has an id")
            .to_owned();
        let (seq, tag) = id.split_once('.').expect("<seq>.<instance>");
        assert!(seq.parse::<u64>().is_ok() && !tag.is_empty(), "{id}");
        // This instance's own id resumes (nothing after it yet: no reset).
        let mut own = open(&s, sub, via, &[("Last-Event-ID", &id)]).await;
        let first = events(&mut own, 1).await;
        assert_eq!(first[0].0, "subscribed");
        // The same sequence number from another instance of the region: reset, never a replay.
        let foreign = format!("{}.someotherinstance", seq.parse::<u64>().unwrap() - 1);
        let mut other = open(&s, sub, via, &[("Last-Event-ID", &foreign)]).await;
        let got = events(&mut other, 2).await;
        assert_eq!(
            (got[0].0.as_str(), got[1].0.as_str()),
            ("subscribed", "reset"),
            "{via:?}"
        );
    }
}
