//! WebSocket and SSE streams, black box: a tokio-tungstenite client and an SSE reader against
//! the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{blocking, recv, send, Server, Ws};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

/// Runs blocking harness calls (reqwest blocking) from async tests.
async fn connect(s: &Server) -> Ws {
    connect_async(s.ws_url("/api/v1/ws"))
        .await
        .expect("ws connect")
        .0
}

/// Reads until the server's close frame; its code.
async fn close_code(ws: &mut Ws, within: Duration) -> u16 {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
            Some(Ok(Message::Close(None))) => return 1005,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("stream error before a close frame: {e}"),
            None => panic!("stream ended without a close frame"),
        }
    }
}

fn points(n: usize, dim: usize, seed: u64, color: impl Fn(usize) -> &'static str) -> Vec<Value> {
    common::clustered(n, dim, 8, 0.3, seed)
        .into_iter()
        .enumerate()
        .map(|(i, v)| json!({"id": format!("p{i}"), "vector": v, "metadata": {"color": color(i), "i": i}}))
        .collect()
}

/// Subscribes to every change of collection `c`.
async fn subscribe_all(ws: &mut Ws) {
    send(ws, json!({"type": "subscribe", "id": 1, "collection": "c"})).await;
    assert_eq!(recv(ws).await["type"], "subscribed");
}

/// Upserts points into collection `c`.
fn upsert(s: &Server, pts: Vec<Value>) {
    s.ok(
        "PUT",
        "/api/v1/collections/c/points",
        Some(&json!({"points": pts})),
    );
}

fn create(s: &Server, name: &str, spec: Value) {
    s.ok("PUT", &format!("/api/v1/collections/{name}"), Some(&spec));
}

/// Collection `c` (8-d, cosine) with `n` red points.
fn fill(s: &Server, n: usize, seed: u64) {
    s.ok(
        "PUT",
        "/api/v1/collections/c",
        Some(&json!({"dimension": 8})),
    );
    let pts = points(n, 8, seed, |_| "red");
    s.ok(
        "PUT",
        "/api/v1/collections/c/points",
        Some(&json!({"points": pts})),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_frames_put_type_first() {
    let s = blocking(|| Server::start(&[]));
    let mut ws = connect(&s).await;
    let frames = [
        json!({"type": "ping", "id": 1}),
        json!({"type": "insert", "id": 2, "collection": "t", "points": [{"id": "a", "vector": [1.0, 0.0]}]}),
        json!({"type": "search", "id": 3, "collection": "t", "query": [1.0, 0.0], "k": 1}),
        json!({"type": "subscribe", "id": 4, "collection": "t"}),
        json!({"type": "delete", "id": 5, "collection": "t", "ids": ["a"]}),
        json!({"type": "nope", "id": 6}),
    ];
    for f in frames {
        send(&mut ws, f).await;
    }
    // pong, ack, search_start, result, search_complete, subscribed, event, ack, error
    let mut seen = 0;
    while seen < 9 {
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            assert!(t.starts_with(r#"{"type":""#), "\"type\" first: {t}");
            seen += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_sees_every_write_sent_after_it_on_the_same_stream() {
    let s = blocking(|| Server::start(&[]));
    blocking(|| fill(&s, 2000, 3));
    let mut ws = connect(&s).await;
    // One batch of frames: a subscribe that seeds a top-k (a search first), then writes at once.
    let one = vec![1.0f32; 8];
    let mut frames = vec![json!({"type": "subscribe", "id": "s", "collection": "c",
        "filter": {"color": "blue"}, "vector": one, "k": 500})];
    for i in 0..40 {
        frames.push(json!({"type": "insert", "id": i, "collection": "c",
            "points": [{"id": format!("new{i}"), "vector": one, "metadata": {"color": "blue"}}]}));
    }
    for f in frames {
        ws.feed(Message::text(f.to_string())).await.expect("feed");
    }
    ws.flush().await.expect("flush");
    let (mut acks, mut events, mut subscribed) = (0, HashSet::new(), false);
    while acks < 40 || events.len() < 40 {
        let f = recv(&mut ws).await;
        match f["type"].as_str() {
            Some("subscribed") => subscribed = true,
            Some("ack") => acks += 1,
            Some("event") => {
                events.insert(f["vector_id"].as_str().unwrap_or_default().to_owned());
            }
            other => panic!("unexpected frame {other:?}: {f}"),
        }
    }
    assert!(subscribed);
    assert_eq!(
        events.len(),
        40,
        "every write after the subscribe is an event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_type_and_error_frames() {
    let s = blocking(|| Server::start(&[]));
    let mut ws = connect(&s).await;

    send(&mut ws, json!({"type": "ping", "id": 1})).await;
    let pong = recv(&mut ws).await;
    assert_eq!(
        (pong["type"].as_str(), pong["id"].as_i64()),
        (Some("pong"), Some(1))
    );
    assert!(pong["timestamp"].as_u64().unwrap() > 1_600_000_000_000);

    // Insert creates the collection on first use (like the short insert path).
    send(
        &mut ws,
        json!({"type": "insert", "id": "i1", "collection": "c",
        "points": [{"id": "a", "vector": [1.0, 0.0, 0.0], "metadata": {"n": 1}},
                   {"id": "b", "vector": [0.0, 1.0, 0.0]},
                   {"vector": [0.0, 0.0, 1.0]}]}),
    )
    .await;
    let ack = recv(&mut ws).await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["id"], "i1");
    assert_eq!(ack["ids"].as_array().unwrap().len(), 3);
    send(
        &mut ws,
        json!({"type": "upsert", "id": "u1", "collection": "c",
        "points": [{"id": "d", "vector": [1.0, 1.0, 0.0]}]}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["ids"], json!(["d"]));

    // Streamed search, k = 1.
    send(
        &mut ws,
        json!({"type": "search", "id": 7, "collection": "c", "query": [1.0, 0.1, 0.0], "k": 1}),
    )
    .await;
    let start = recv(&mut ws).await;
    assert_eq!(
        (start["type"].as_str(), start["id"].as_i64()),
        (Some("search_start"), Some(7))
    );
    let qid = start["query_id"].clone();
    let r = recv(&mut ws).await;
    assert_eq!(r["type"], "result");
    assert_eq!(
        (r["rank"].as_u64(), r["vector_id"].as_str()),
        (Some(1), Some("a"))
    );
    assert_eq!(r["query_id"], qid);
    assert_eq!(r["metadata"], json!({"n": 1}));
    assert!(r["score"].as_f64().unwrap() > 0.9 && r["distance"].as_f64().unwrap() < 0.1);
    let done = recv(&mut ws).await;
    assert_eq!(done["type"], "search_complete");
    assert_eq!(
        (done["total_results"].as_u64(), done["id"].as_i64()),
        (Some(1), Some(7))
    );
    assert!(done["took_ms"].as_f64().is_some());

    // One-frame answer, and search by a stored point.
    send(&mut ws, json!({"type": "search", "id": "s2", "collection": "c", "vector_id": "b", "k": 2, "stream": false})).await;
    let res = recv(&mut ws).await;
    assert_eq!(res["type"], "search_result");
    assert_eq!(res["results"][0]["id"], "b");
    assert_eq!(res["results"].as_array().unwrap().len(), 2);

    // Subscribe / unsubscribe.
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "sub", "collection": "c"}),
    )
    .await;
    let sub = recv(&mut ws).await;
    assert_eq!(sub["type"], "subscribed");
    let sid = sub["subscription"].as_u64().unwrap();
    send(
        &mut ws,
        json!({"type": "unsubscribe", "id": "un", "subscription": sid}),
    )
    .await;
    let un = recv(&mut ws).await;
    assert_eq!(
        (un["type"].as_str(), un["subscription"].as_u64()),
        (Some("unsubscribed"), Some(sid))
    );

    // Delete with ack count (a missing id does not count).
    send(
        &mut ws,
        json!({"type": "delete", "id": "d1", "collection": "c", "ids": ["a", "nope"]}),
    )
    .await;
    let del = recv(&mut ws).await;
    assert_eq!(
        (del["type"].as_str(), del["deleted"].as_u64()),
        (Some("ack"), Some(1))
    );

    send(&mut ws, json!({"type": "auth", "id": "au", "token": "x"})).await;
    assert_eq!(recv(&mut ws).await["type"], "authenticated");

    // Errors echo the request id and carry the contract's codes; the stream stays usable.
    let bad: [(Value, Value, &str); 7] = [
        (
            json!({"type": "search", "id": "e1", "collection": "c", "query": [1.0], "k": 1}),
            json!("e1"),
            "dimension_mismatch",
        ),
        (
            json!({"type": "search", "id": "e2", "collection": "nope", "query": [1.0, 0.0, 0.0]}),
            json!("e2"),
            "not_found",
        ),
        (
            json!({"type": "search", "id": "e3", "collection": "c", "query": [1.0, 0.0, 0.0], "k": 0}),
            json!("e3"),
            "invalid_argument",
        ),
        (
            json!({"type": "warp", "id": 9}),
            json!(9),
            "invalid_argument",
        ),
        (json!({"id": "e5"}), json!("e5"), "invalid_argument"),
        (
            json!({"type": "unsubscribe", "id": "e6", "subscription": 123456}),
            json!("e6"),
            "not_found",
        ),
        (
            json!({"type": "insert", "id": "e7", "collection": "c", "points": [{"vector": [1.0, "x", 0.0]}]}),
            json!("e7"),
            "invalid_argument",
        ),
    ];
    for (frame, id, code) in bad {
        send(&mut ws, frame.clone()).await;
        let e = recv(&mut ws).await;
        assert_eq!(e["type"], "error", "{frame}");
        assert_eq!(e["id"], id, "{frame}");
        assert_eq!(e["code"], code, "{frame}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    ws.send(Message::text("{not json")).await.unwrap();
    let e = recv(&mut ws).await;
    assert_eq!(
        (e["code"].as_str(), &e["id"]),
        (Some("invalid_argument"), &Value::Null)
    );
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(recv(&mut ws).await["code"], "invalid_argument");
    send(&mut ws, json!({"type": "ping", "id": "still"})).await;
    assert_eq!(recv(&mut ws).await["id"], "still");

    // A plain GET without upgrade headers is refused with the JSON error shape.
    let (status, body) = blocking(|| s.call("GET", "/api/v1/ws", None));
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_argument");

    ws.close(None).await.unwrap();
    let m = blocking(|| s.metrics());
    assert!(
        m.contains("ruvector_stream_frames_in_total{type=\"search\"}"),
        "{m}"
    );
    assert!(m.contains("ruvector_stream_first_result_seconds"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_results_come_in_rank_order_for_large_k_and_many_requests_in_flight() {
    let s = blocking(|| Server::start(&[("RUVECTOR__INDEX__MAX_K", "5000")]));
    let pts = points(6000, 16, 3, |i| if i % 2 == 0 { "red" } else { "blue" });
    for chunk in pts.chunks(2000) {
        blocking(|| {
            s.ok(
                "PUT",
                "/api/v1/collections/big",
                Some(&json!({"dimension": 16})),
            )
        });
        blocking(|| {
            s.ok(
                "PUT",
                "/api/v1/collections/big/points",
                Some(&json!({"points": chunk})),
            )
        });
    }
    let q = pts[10]["vector"].clone();
    let rest = blocking(|| {
        s.ok(
            "POST",
            "/api/v1/collections/big/points/search",
            Some(&json!({"vector": q, "k": 2000, "ef_search": 2000})),
        )
    });
    let expected: Vec<String> = rest["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(expected.len(), 2000);

    let mut ws = connect(&s).await;
    send(&mut ws, json!({"type": "search", "id": "big", "collection": "big", "query": q, "k": 2000, "ef_search": 2000})).await;
    assert_eq!(recv(&mut ws).await["type"], "search_start");
    let mut got = Vec::new();
    let mut last = f64::INFINITY;
    loop {
        let f = recv(&mut ws).await;
        match f["type"].as_str().unwrap() {
            "result" => {
                assert_eq!(f["rank"].as_u64().unwrap() as usize, got.len() + 1);
                let score = f["score"].as_f64().unwrap();
                assert!(score <= last + 1e-6, "scores must not increase");
                last = score;
                assert!(f["metadata"]["color"].is_string());
                got.push(f["vector_id"].as_str().unwrap().to_owned());
            }
            "search_complete" => {
                assert_eq!(f["total_results"], 2000);
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        got, expected,
        "the stream sends exactly the REST answer, in order"
    );

    // 200 searches sent without waiting: every one answered, each in rank order, complete.
    let n = 200;
    for i in 0..n {
        let q = pts[i * 7]["vector"].clone();
        send(
            &mut ws,
            json!({"type": "search", "id": i, "collection": "big", "query": q, "k": 5}),
        )
        .await;
    }
    let mut ranks = vec![0u64; n];
    let mut complete = HashSet::new();
    while complete.len() < n {
        let f = recv(&mut ws).await;
        let id = f["id"].as_u64().unwrap() as usize;
        match f["type"].as_str().unwrap() {
            "search_start" => assert_eq!(ranks[id], 0),
            "result" => {
                assert_eq!(
                    f["rank"].as_u64().unwrap(),
                    ranks[id] + 1,
                    "rank order within a request"
                );
                ranks[id] += 1;
            }
            "search_complete" => {
                assert_eq!(f["total_results"].as_u64().unwrap(), ranks[id]);
                assert!(complete.insert(id));
            }
            other => panic!("unexpected {other}: {f}"),
        }
    }
    assert!(ranks.iter().all(|r| *r == 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_get_matching_upserts_and_deletes_and_nothing_else() {
    let s = blocking(|| Server::start(&[]));
    blocking(|| create(&s, "c", json!({"dimension": 2, "metric": "l2"})));
    blocking(|| create(&s, "other", json!({"dimension": 2})));
    let mut ws = connect(&s).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "id": 1, "collection": "c", "filter": {"color": "red"}}),
    )
    .await;
    let red = recv(&mut ws).await["subscription"].as_u64().unwrap();
    send(&mut ws, json!({"type": "subscribe", "id": 2, "collection": "c", "vector": [0.0, 0.0], "score_threshold": -1.5})).await;
    let near = recv(&mut ws).await["subscription"].as_u64().unwrap();
    send(
        &mut ws,
        json!({"type": "subscribe", "id": 3, "collection": "c",
        "filter": {"must": [{"key": "i", "range": {"gte": 10}}]}}),
    )
    .await;
    let big_i = recv(&mut ws).await["subscription"].as_u64().unwrap();

    // Writes from REST and from another stream.
    blocking(|| {
        s.ok(
            "PUT",
            "/api/v1/collections/c/points",
            Some(&json!({"points": [
                {"id": "r1", "vector": [5.0, 5.0], "metadata": {"color": "red", "i": 1}},
                {"id": "b1", "vector": [1.0, 0.0], "metadata": {"color": "blue", "i": 2}},
                {"id": "b2", "vector": [9.0, 9.0], "metadata": {"color": "blue", "i": 11}},
            ]})),
        );
        s.ok(
            "PUT",
            "/api/v1/collections/other/points",
            Some(&json!({"points": [
            {"id": "o1", "vector": [0.0, 1.0], "metadata": {"color": "red", "i": 99}}]})),
        );
    });
    let mut other = connect(&s).await;
    send(
        &mut other,
        json!({"type": "insert", "id": "x", "collection": "c",
        "points": [{"id": "r2", "vector": [0.5, 0.5], "metadata": {"color": "red", "i": 3}}]}),
    )
    .await;
    assert_eq!(recv(&mut other).await["type"], "ack");
    blocking(|| {
        s.ok(
            "PATCH",
            "/api/v1/collections/c/points/b1",
            Some(&json!({"metadata": {"color": "red"}})),
        );
        s.ok("DELETE", "/api/v1/collections/c/points/r1", None);
    });
    // Subscribers are matched after the writes are acknowledged: wait for red's last event
    // (the delete of r1) before unsubscribing it.
    let mut events = Vec::new();
    loop {
        let f = recv(&mut ws).await;
        assert_eq!(f["type"], "event", "{f}");
        let last_red = f["subscription"] == red && f["op"] == "delete";
        events.push(f);
        if last_red {
            break;
        }
    }
    send(
        &mut ws,
        json!({"type": "unsubscribe", "id": "u", "subscription": red}),
    )
    .await;
    loop {
        let f = recv(&mut ws).await;
        if f["type"] == "unsubscribed" {
            break;
        }
        assert_eq!(f["type"], "event", "{f}");
        events.push(f);
    }
    // After unsubscribing, red gets nothing more.
    blocking(|| {
        s.ok(
            "PUT",
            "/api/v1/collections/c/points",
            Some(&json!({"points": [
            {"id": "r3", "vector": [0.1, 0.1], "metadata": {"color": "red", "i": 50}}]})),
        )
    });
    // r3's two events (near, big_i), then a ping: anything extra would arrive before its pong.
    let mut r3 = 0;
    while r3 < 2 {
        let f = recv(&mut ws).await;
        if f["vector_id"] == "r3" {
            r3 += 1;
        }
        events.push(f);
    }
    send(&mut ws, json!({"type": "ping", "id": "end"})).await;
    loop {
        let f = recv(&mut ws).await;
        if f["type"] == "pong" {
            break;
        }
        events.push(f);
    }
    let seen: Vec<(u64, String, String)> = events
        .iter()
        .map(|e| {
            (
                e["subscription"].as_u64().unwrap(),
                e["op"].as_str().unwrap().to_owned(),
                e["vector_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: HashSet<(u64, String, String)> = [
        (red, "upsert", "r1"),
        (red, "upsert", "r2"),
        (red, "upsert", "b1"), // patched to red
        (red, "delete", "r1"),
        (near, "upsert", "b1"),
        (near, "upsert", "r2"),
        (near, "upsert", "b1"), // the patch keeps its vector
        (near, "upsert", "r3"),
        (big_i, "upsert", "b2"),
        (big_i, "upsert", "r3"),
    ]
    .into_iter()
    .map(|(a, b, c)| (a, b.to_owned(), c.to_owned()))
    .collect();
    let got: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(got, want, "events: {events:?}");
    assert_eq!(seen.len(), 10, "no duplicates: {seen:?}");
    // Sequence numbers grow per collection; scores come with vector subscriptions.
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "{seqs:?}");
    let r2 = events
        .iter()
        .find(|e| e["subscription"] == near && e["vector_id"] == "r2")
        .unwrap();
    assert!((r2["score"].as_f64().unwrap() + std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-3);
    assert_eq!(r2["metadata"]["color"], "red");
    let del = events.iter().find(|e| e["op"] == "delete").unwrap();
    assert_eq!(
        del["metadata"]["color"], "red",
        "a delete reports what the point held"
    );
}

/// A minimal SSE reader over a streaming HTTP response.
struct Sse {
    res: reqwest::Response,
    buf: String,
}

#[derive(Debug)]
struct Event {
    name: String,
    id: Option<u64>,
    data: Value,
}

impl Sse {
    async fn open(url: &str, last_id: Option<u64>) -> Sse {
        let mut req = reqwest::Client::new().get(url);
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let res = req.send().await.expect("sse");
        assert_eq!(res.status(), 200);
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        Sse {
            res,
            buf: String::new(),
        }
    }

    /// The next event, or a `: ping` comment as an event named "ping".
    async fn next(&mut self) -> Event {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                if block.starts_with(':') {
                    return Event {
                        name: "ping".into(),
                        id: None,
                        data: Value::Null,
                    };
                }
                let mut e = Event {
                    name: String::new(),
                    id: None,
                    data: Value::Null,
                };
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        e.name = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        // `<seq>` or `<seq>.<instance>`: the sequence number.
                        e.id = v.split('.').next().and_then(|s| s.parse().ok());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        e.data = serde_json::from_str(v).expect("json data");
                    }
                }
                return e;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(20), self.res.chunk())
                .await
                .expect("sse data within 20 s")
                .expect("sse read")
                .expect("sse stream open");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next event that is not a heartbeat.
    async fn event(&mut self) -> Event {
        loop {
            let e = self.next().await;
            if e.name != "ping" {
                return e;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_search_subscribe_resume_and_reset() {
    let s = blocking(|| {
        Server::start(&[
            ("RUVECTOR__STREAM__REPLAY_WINDOW", "40"),
            ("RUVECTOR__STREAM__HEARTBEAT_INTERVAL_MS", "300"),
        ])
    });
    blocking(|| create(&s, "c", json!({"dimension": 2})));
    let insert = |ids: std::ops::Range<usize>| {
        let pts: Vec<Value> = ids
            .map(
                |i| json!({"id": format!("p{i}"), "vector": [1.0, i as f32], "metadata": {"i": i}}),
            )
            .collect();
        blocking(|| upsert(&s, pts));
    };
    let url = s.url("/api/v1/stream/subscribe?collection=c");
    let mut sub = Sse::open(&url, None).await;
    let first = sub.event().await;
    assert_eq!(first.name, "subscribed");
    insert(0..10);
    // Two shards publish in their own order: events are ordered by seq, not by id.
    let mut seen = Vec::new();
    for _ in 0..10 {
        let e = sub.event().await;
        assert_eq!(e.name, "event");
        assert_eq!(e.data["event"], "event");
        assert_eq!(e.data["seq"].as_u64(), e.id);
        seen.push((
            e.id.unwrap(),
            e.data["vector_id"].as_str().unwrap().to_owned(),
        ));
    }
    let ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    let names: HashSet<String> = seen.iter().map(|(_, n)| n.clone()).collect();
    assert_eq!(names, (0..10).map(|i| format!("p{i}")).collect());
    // Heartbeats arrive on a quiet stream.
    assert_eq!(sub.next().await.name, "ping");
    drop(sub);

    // Missed while away: resuming after the 5th event gets the other 5 and the 15 new ones.
    insert(10..25);
    let mut sub = Sse::open(&url, Some(ids[4])).await;
    assert_eq!(sub.event().await.name, "subscribed");
    let mut again = HashSet::new();
    for n in 1..=20u64 {
        let e = sub.event().await;
        assert_eq!(e.name, "event");
        assert_eq!(e.id, Some(ids[4] + n), "no gap, no duplicate");
        again.insert(e.data["vector_id"].as_str().unwrap().to_owned());
    }
    let want: HashSet<String> = seen[5..]
        .iter()
        .map(|(_, n)| n.clone())
        .chain((10..25).map(|i| format!("p{i}")))
        .collect();
    assert_eq!(again, want);
    drop(sub);

    // Beyond the window (40): reset, then live events.
    insert(25..100);
    let mut sub = Sse::open(&url, Some(ids[4])).await;
    assert_eq!(sub.event().await.name, "subscribed");
    assert_eq!(sub.event().await.name, "reset");
    insert(100..101);
    // Matching runs after a write is acknowledged, so the tail of 25..100 may still arrive live
    // after the reset: then p100, in sequence order.
    let mut last = 0;
    loop {
        let e = sub.event().await;
        let seq = e.id.unwrap();
        assert!(seq > last, "in order");
        last = seq;
        if e.data["vector_id"] == "p100" {
            break;
        }
    }
    drop(sub);

    // SSE search: POST body, and GET by a stored point.
    let res = reqwest::Client::new()
        .post(s.url("/api/v1/stream/search"))
        .json(&json!({"collection": "c", "vector": [1.0, 50.0], "k": 3}))
        .send()
        .await
        .unwrap();
    let mut st = Sse {
        res,
        buf: String::new(),
    };
    let e = st.event().await;
    assert_eq!(e.name, "search_start");
    for rank in 1..=3 {
        let e = st.event().await;
        assert_eq!(
            (e.name.as_str(), e.data["rank"].as_u64()),
            ("result", Some(rank))
        );
        assert!(e.id.is_some());
    }
    let e = st.event().await;
    assert_eq!(
        (e.name.as_str(), e.data["total_results"].as_u64()),
        ("search_complete", Some(3))
    );
    let mut st = Sse::open(
        &s.url("/api/v1/stream/search?collection=c&query_vector_id=p7&k=2"),
        None,
    )
    .await;
    assert_eq!(st.event().await.name, "search_start");
    assert_eq!(st.event().await.data["vector_id"], "p7");

    // Bad requests get JSON errors before any stream starts.
    let (status, body) =
        blocking(|| s.call("GET", "/api/v1/stream/subscribe?collection=nope", None));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = blocking(|| {
        s.call(
            "GET",
            "/api/v1/stream/subscribe?collection=c&filter=%7Bbad",
            None,
        )
    });
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_close_with_4001_while_answering_ones_stay() {
    let s = blocking(|| {
        Server::start(&[
            ("RUVECTOR__STREAM__HEARTBEAT_INTERVAL_MS", "200"),
            ("RUVECTOR__STREAM__IDLE_TIMEOUT_MS", "800"),
        ])
    });
    let mut idle = connect(&s).await;
    let mut alive = connect(&s).await;
    // `alive` keeps reading, so its client answers the server's pings; `idle` reads nothing.
    let t = Instant::now();
    let mut pings = 0;
    while t.elapsed() < Duration::from_millis(2000) {
        if let Ok(Some(Ok(m))) =
            tokio::time::timeout(Duration::from_millis(100), alive.next()).await
        {
            if m.is_ping() {
                pings += 1;
            }
        }
    }
    assert!(pings >= 2, "server pings a quiet stream ({pings})");
    assert_eq!(close_code(&mut idle, Duration::from_secs(5)).await, 4001);
    send(&mut alive, json!({"type": "ping", "id": 1})).await;
    assert_eq!(recv(&mut alive).await["type"], "pong");
    assert!(blocking(|| s.metric("ruvector_stream_closes_total", &["code=\"4001\""])) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_closed_with_4002_and_memory_stays_bounded() {
    let s = blocking(|| {
        Server::start(&[
            ("RUVECTOR__STREAM__MAX_OUTBOUND_MESSAGES", "256"),
            ("RUVECTOR__STREAM__MAX_OUTBOUND_BYTES", "262144"),
            ("RUVECTOR__STREAM__CLOSE_GRACE_MS", "20000"),
            ("RUVECTOR__STREAM__REPLAY_WINDOW", "100"),
        ])
    });
    blocking(|| create(&s, "c", json!({"dimension": 4})));
    let mut slow = connect(&s).await;
    subscribe_all(&mut slow).await;
    let rss_before = blocking(|| s.rss_kb());
    // ~40 MB of events (2 KB of metadata each) while the client reads nothing; the same 500
    // points are rewritten so that the index itself does not grow.
    let pad = "x".repeat(2000);
    for b in 0..40 {
        let pts: Vec<Value> = (0..500)
            .map(|i| json!({"id": format!("p{i}"), "vector": [1.0, b as f32, i as f32, 0.5], "metadata": {"pad": pad}}))
            .collect();
        blocking(|| upsert(&s, pts));
    }
    let rss_after = blocking(|| s.rss_kb());
    assert!(blocking(|| s.metric("ruvector_stream_slow_consumers_total", &[])) >= 1.0);
    // The client now reads: what the kernel held, then the close frame.
    assert_eq!(close_code(&mut slow, Duration::from_secs(20)).await, 4002);
    // 40 MB went out as events; the server kept far less than that (index and log included).
    let grown_mb = rss_after.saturating_sub(rss_before) / 1024;
    assert!(grown_mb < 30, "server RSS grew by {grown_mb} MB");
    // Other streams are unaffected.
    let mut ok = connect(&s).await;
    send(&mut ok, json!({"type": "ping", "id": 2})).await;
    assert_eq!(recv(&mut ok).await["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_one_socket_is_slowed_not_dropped() {
    // A small per-stream in-flight bound, so the flood reaches backpressure quickly; the rest is
    // as shipped.
    let s = blocking(|| Server::start(&[("RUVECTOR__STREAM__MAX_INFLIGHT", "2")]));
    blocking(|| fill(&s, 2000, 5));
    let ws = connect(&s).await;
    let (mut tx, mut rx) = ws.split();
    let n = 3000usize;
    let writer = tokio::spawn(async move {
        for i in 0..n {
            let frame = if i % 3 == 0 {
                json!({"type": "ping", "id": i})
            } else {
                json!({"type": "search", "id": i, "collection": "c", "query": [1, 0, 0, 0, 0, 0, 0, i % 7], "k": 3, "stream": false})
            };
            tx.send(Message::text(frame.to_string())).await.unwrap();
        }
        tx
    });
    let mut answered = vec![false; n];
    let mut count = 0;
    while count < n {
        let m = tokio::time::timeout(Duration::from_secs(30), rx.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).unwrap();
            let i = v["id"].as_u64().unwrap() as usize;
            assert!(
                matches!(v["type"].as_str(), Some("pong" | "search_result")),
                "{v}"
            );
            assert!(!answered[i]);
            answered[i] = true;
            count += 1;
        }
    }
    drop(writer.await.unwrap());
    assert!(answered.iter().all(|a| *a));
    assert!(blocking(|| s.metric("ruvector_stream_read_pauses_total", &[])) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_close_with_1009() {
    let s = blocking(|| Server::start(&[("RUVECTOR__STREAM__MAX_FRAME_BYTES", "4096")]));
    let mut ws = connect(&s).await;
    send(&mut ws, json!({"type": "ping", "pad": "y".repeat(3000)})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
    send(&mut ws, json!({"type": "ping", "pad": "y".repeat(10_000)})).await;
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await, 1009);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_streams_with_1001_and_exits_in_time() {
    let mut s = blocking(|| Server::start(&[("RUVECTOR__SERVER__DRAIN_TIMEOUT_MS", "10000")]));
    blocking(|| fill(&s, 500, 9));
    let mut streams = Vec::new();
    for _ in 0..5 {
        let mut ws = connect(&s).await;
        subscribe_all(&mut ws).await;
        streams.push(ws);
    }
    let sse = Sse::open(&s.url("/api/v1/stream/subscribe?collection=c"), None).await;
    let took = blocking(|| s.terminate());
    assert!(
        took < Duration::from_secs(10),
        "exit took {took:?}: {}",
        s.log_text()
    );
    for mut ws in streams {
        assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await, 1001);
    }
    let mut sse = sse;
    assert_eq!(sse.event().await.name, "subscribed");
    assert_eq!(sse.event().await.name, "end");
}

#[test]
fn idle_scale_holds_streams_and_reports_memory_per_stream() {
    let s = Server::start(&[("RUVECTOR__STREAM__HEARTBEAT_INTERVAL_MS", "200")]);
    let cfg = ruvector_load::streams::IdleScale {
        kind: ruvector_load::streams::StreamKind::Ws,
        server: s.addr(),
        conns: 300,
        sources: vec![[127, 0, 0, 1].into(), [127, 0, 0, 2].into()],
        connect_parallel: 64,
        settle: Duration::from_millis(800),
        burst_bytes: 65536,
        recover: Duration::from_secs(2),
        server_pid: Some(s.pid()),
    };
    let r = ruvector_load::streams::idle_scale(cfg, &|_, _, _| {});
    assert_eq!((r.conns_open, r.connect_failures), (300, 0), "{r:?}");
    assert_eq!(r.burst_replies, 300, "every large message answered: {r:?}");
    assert_eq!(
        r.closed_by_server, 0,
        "heartbeats answered, nobody evicted: {r:?}"
    );
    assert!(r.idle_rss_kb > 0 && r.baseline_rss_kb > 0);
    assert!(r.bytes_per_idle_stream < 64.0 * 1024.0, "{r:?}");
    assert_eq!(r.after_burst.len(), 2);
    assert!(s.metric("ruvector_stream_frames_out_total", &["type=\"ws_ping\""]) >= 300.0);
}
