//! Authentication, tenants, rate limits and load shedding, black box (low limits set through the
//! RUVECTOR__ environment and a config file with keys).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Server;
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

const JWT_SECRET: &str = "test-jwt-secret";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwt(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// A config file with keys; returned with its directory (keep both alive).
fn config(metrics_admin: bool) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let key = |name: &str, scopes: &str, tenant: &str, tier: &str| {
        format!(
            "{{ name = \"{name}\", sha256 = \"{}\", scopes = [{scopes}], tenant = \"{tenant}\", tier = \"{tier}\" }}",
            common::sha256_hex(&format!("key-{name}"))
        )
    };
    let text = format!(
        "[auth]\njwt_secret = \"{JWT_SECRET}\"\nmetrics_admin = {metrics_admin}\nkeys = [\n  {},\n  {},\n  {},\n  {},\n  {},\n]\n",
        key("reader", "\"read\"", "acme", "standard"),
        key("writer", "\"read\", \"write\"", "acme", "standard"),
        key("admin", "\"admin\"", "acme", "standard"),
        key("beta", "\"admin\"", "beta", "standard"),
        key("vip", "\"admin\"", "acme", "premium"),
    );
    let path = dir.path().join("auth.toml");
    std::fs::write(&path, text).unwrap();
    let p = path.to_str().unwrap().to_owned();
    (dir, p)
}

fn token(name: &str) -> String {
    format!("key-{name}")
}

/// An HTTP call with an optional bearer token: (status, body, Retry-After).
fn call(
    s: &Server,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, Option<String>) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = common::client().request(m, s.url(path));
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let res = req.send().unwrap();
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = res.text().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        retry,
    )
}

fn put_docs(s: &Server, bearer: Option<&str>, body: Option<Value>) -> (u16, Value, Option<String>) {
    call(s, "PUT", "/api/v1/collections/docs/points", bearer, body)
}

fn search_docs(
    s: &Server,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, Option<String>) {
    call(
        s,
        "POST",
        "/api/v1/collections/docs/points/search",
        bearer,
        body,
    )
}

fn search_c(s: &Server, bearer: Option<&str>, body: Option<Value>) -> (u16, Value, Option<String>) {
    call(
        s,
        "POST",
        "/api/v1/collections/c/points/search",
        bearer,
        body,
    )
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn ws(s: &Server, bearer: Option<&str>) -> Result<Ws, u16> {
    let mut req = s.ws_url("/api/v1/ws").into_client_request().unwrap();
    if let Some(t) = bearer {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("ws connect: {e}"),
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_matrix_on_rest_and_websocket() {
    let (_dir, cfg) = config(true);
    let s = blocking(|| Server::start(&[("RUVECTOR_CONFIG", &cfg)]));
    let admin = token("admin");
    let reader = token("reader");
    let beta = token("beta");

    // Probes stay open; /metrics needs admin here.
    blocking(|| {
        assert_eq!(call(&s, "GET", "/health/ready", None, None).0, 200);
        assert_eq!(call(&s, "GET", "/metrics", None, None).0, 401);
        assert_eq!(call(&s, "GET", "/metrics", Some(&reader), None).0, 403);
        assert_eq!(call(&s, "GET", "/metrics", Some(&admin), None).0, 200);

        // No credentials, a wrong key, an expired or forged JWT: 401 unauthenticated.
        let (st, v, _) = call(&s, "GET", "/api/v1/collections", None, None);
        assert_eq!((st, code(&v)), (401, "unauthenticated"));
        let (st, v, _) = call(&s, "GET", "/api/v1/collections", Some("key-nobody"), None);
        assert_eq!((st, code(&v)), (401, "unauthenticated"));
        let expired =
            jwt(json!({"sub": "bot", "scopes": ["read"], "tenant": "acme", "exp": now() - 60}));
        let (st, v, _) = call(&s, "GET", "/api/v1/collections", Some(&expired), None);
        assert_eq!((st, code(&v)), (401, "unauthenticated"));
        assert!(
            v["error"]["message"].as_str().unwrap().contains("expired"),
            "{v}"
        );

        // Admin of tenant acme creates and fills "docs".
        let (st, v, _) = call(
            &s,
            "PUT",
            "/api/v1/collections/docs",
            Some(&admin),
            Some(json!({"dimension": 2})),
        );
        assert_eq!(st, 201, "{v}");
        assert_eq!(v["name"], "docs", "the tenant sees its own names");
        let pts = json!({"points": [{"id": "a", "vector": [1.0, 0.0]}, {"id": "b", "vector": [0.0, 1.0]}]});
        assert_eq!(put_docs(&s, Some(&admin), Some(pts)).0, 200);

        // Wrong scope: a reader may search but not write or create.
        let (st, v, _) = put_docs(
            &s,
            Some(&reader),
            Some(json!({"points": [{"id": "c", "vector": [1.0, 1.0]}]})),
        );
        assert_eq!((st, code(&v)), (403, "permission_denied"));
        let (st, _, _) = call(
            &s,
            "PUT",
            "/api/v1/collections/other",
            Some(&reader),
            Some(json!({"dimension": 2})),
        );
        assert_eq!(st, 403);
        let (st, v, _) = search_docs(
            &s,
            Some(&reader),
            Some(json!({"vector": [1.0, 0.1], "k": 1})),
        );
        assert_eq!((st, v["results"][0]["id"].as_str()), (200, Some("a")));
        // ?token= works as well as the header.
        let (st, _, _) = call(
            &s,
            "GET",
            &format!("/api/v1/collections/docs?token={reader}"),
            None,
            None,
        );
        assert_eq!(st, 200);
        // A JWT with the write scope and the tenant claim.
        let w = jwt(
            json!({"sub": "ingest", "scopes": ["write"], "tenant": "acme", "exp": now() + 600}),
        );
        let (st, v, _) = put_docs(
            &s,
            Some(&w),
            Some(json!({"points": [{"id": "c", "vector": [1.0, 1.0]}]})),
        );
        assert_eq!(st, 200, "{v}");

        // Another tenant: acme's collection does not exist for beta, and beta's list is empty.
        let (st, v, _) = call(&s, "GET", "/api/v1/collections/docs", Some(&beta), None);
        assert_eq!((st, code(&v)), (404, "not_found"));
        let (st, v, _) = search_docs(&s, Some(&beta), Some(json!({"vector": [1.0, 0.1], "k": 1})));
        assert_eq!((st, code(&v)), (404, "not_found"));
        let (_, v, _) = call(&s, "GET", "/api/v1/collections", Some(&beta), None);
        assert_eq!(v["collections"], json!([]));
        // Beta can have its own "docs", separate from acme's.
        assert_eq!(
            call(
                &s,
                "PUT",
                "/api/v1/collections/docs",
                Some(&beta),
                Some(json!({"dimension": 3}))
            )
            .0,
            201
        );
        let (_, v, _) = call(&s, "GET", "/api/v1/collections/docs", Some(&admin), None);
        assert_eq!(
            (v["dimension"].as_u64(), v["count"].as_u64()),
            (Some(2), Some(3))
        );
        let (_, v, _) = call(&s, "GET", "/api/v1/collections", Some(&admin), None);
        let names: Vec<&str> = v["collections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["docs"]);
        // Dots are not allowed in names: nobody reaches another namespace by spelling it.
        let (st, _, _) = call(
            &s,
            "GET",
            "/api/v1/collections/beta.docs",
            Some(&admin),
            None,
        );
        assert_eq!(st, 400);
    });

    // WebSocket: a bad key is refused at the upgrade.
    assert_eq!(ws(&s, Some("key-nobody")).await.err(), Some(401));
    // No credentials: the first frame must be `auth`.
    let mut c = ws(&s, None).await.unwrap();
    send(
        &mut c,
        json!({"type": "search", "id": 1, "collection": "docs", "query": [1.0, 0.0]}),
    )
    .await;
    let e = recv(&mut c).await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_i64()),
        (Some("unauthenticated"), Some(1))
    );
    assert_eq!(close_code(&mut c).await, 1008);
    // An expired JWT in the auth frame.
    let mut c = ws(&s, None).await.unwrap();
    let expired = jwt(json!({"sub": "bot", "scopes": ["read"], "exp": now() - 60}));
    send(&mut c, json!({"type": "auth", "id": "a", "token": expired})).await;
    assert_eq!(recv(&mut c).await["code"], "unauthenticated");
    assert_eq!(close_code(&mut c).await, 1008);
    // A reader through the auth frame: reads yes, writes no, tenant-scoped names.
    let mut c = ws(&s, None).await.unwrap();
    send(&mut c, json!({"type": "auth", "id": "a", "token": reader})).await;
    let ok = recv(&mut c).await;
    assert_eq!(
        (ok["type"].as_str(), ok["tenant"].as_str()),
        (Some("authenticated"), Some("acme"))
    );
    send(&mut c, json!({"type": "search", "id": 2, "collection": "docs", "query": [0.0, 1.0], "k": 1, "stream": false})).await;
    let r = recv(&mut c).await;
    assert_eq!(r["results"][0]["id"], "b", "{r}");
    send(&mut c, json!({"type": "insert", "id": 3, "collection": "docs", "points": [{"vector": [1.0, 1.0]}]})).await;
    let e = recv(&mut c).await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_i64()),
        (Some("permission_denied"), Some(3))
    );
    send(
        &mut c,
        json!({"type": "subscribe", "id": 4, "collection": "docs"}),
    )
    .await;
    let sub = recv(&mut c).await;
    assert_eq!(
        (sub["type"].as_str(), sub["collection"].as_str()),
        (Some("subscribed"), Some("docs"))
    );
    // Beta through the upgrade header: acme's "docs" is not beta's (beta's is 3-d and empty).
    let mut b = ws(&s, Some(&beta)).await.unwrap();
    send(
        &mut b,
        json!({"type": "search", "id": 5, "collection": "docs", "query": [1.0, 0.0]}),
    )
    .await;
    assert_eq!(recv(&mut b).await["code"], "dimension_mismatch");
    send(&mut b, json!({"type": "insert", "id": 6, "collection": "docs", "points": [{"id": "z", "vector": [1.0, 0.0, 0.0]}]})).await;
    assert_eq!(recv(&mut b).await["type"], "ack");
    // Acme's subscriber hears acme's writes only, under acme's name.
    blocking(|| {
        let pts = json!({"points": [{"id": "d", "vector": [0.5, 0.5]}]});
        assert_eq!(put_docs(&s, Some(&admin), Some(pts)).0, 200);
    });
    let ev = recv(&mut c).await;
    assert_eq!(
        (
            ev["type"].as_str(),
            ev["vector_id"].as_str(),
            ev["collection"].as_str()
        ),
        (Some("event"), Some("d"), Some("docs"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after_and_recover_and_abusers_get_4029() {
    // Tiny read quotas, so one client can spend them; everything else as shipped.
    let s = blocking(|| {
        Server::start(&[
            ("RUVECTOR__RATE_LIMIT__READ_PER_S", "4"),
            ("RUVECTOR__RATE_LIMIT__READ_BURST", "4"),
            ("RUVECTOR__RATE_LIMIT__ABUSE_REFUSALS", "5"),
        ])
    });
    blocking(|| {
        s.ok(
            "PUT",
            "/api/v1/collections/c",
            Some(&json!({"dimension": 2})),
        );
        let search = || search_c(&s, None, Some(json!({"vector": [1.0, 0.0]})));
        let mut limited = None;
        for _ in 0..8 {
            let (st, v, retry) = search();
            if st == 429 {
                limited = Some((v, retry));
                break;
            }
            assert_eq!(st, 200);
        }
        let (v, retry) = limited.expect("the 5th read within a second is limited");
        assert_eq!(code(&v), "rate_limited");
        let ms = v["retry_after_ms"].as_u64().unwrap();
        assert!(
            (1..=250).contains(&ms),
            "4/s refills one request every 250 ms: {ms}"
        );
        assert_eq!(
            retry.as_deref(),
            Some("1"),
            "Retry-After rounds up to whole seconds"
        );
        // Waiting as told is enough.
        std::thread::sleep(Duration::from_millis(ms + 20));
        assert_eq!(search().0, 200, "recovered after Retry-After");
        // Writes have their own quota.
        let (st, _, _) = call(
            &s,
            "PUT",
            "/api/v1/collections/c/points",
            None,
            Some(json!({"points": [{"vector": [1.0, 1.0]}]})),
        );
        assert_eq!(st, 200);
        assert!(s.metric("ruvector_rate_limited_total", &["class=\"read\""]) >= 1.0);
    });
    // A stream that keeps sending after refusals is closed with 4029.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut c = ws(&s, None).await.unwrap();
    for i in 0..40 {
        send(&mut c, json!({"type": "ping", "id": i})).await;
    }
    let mut refused = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), c.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "error" {
                    assert_eq!(v["code"], "rate_limited");
                    assert!(v["retry_after_ms"].as_u64().unwrap() >= 1);
                    refused += 1;
                }
            }
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(u16::from(f.code), 4029);
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("expected frames then a 4029 close, got {other:?}"),
        }
    }
    assert_eq!(
        refused, 6,
        "the first refusal gives a retry time; the 5th frame sent before it closes the stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shedding_engages_under_overload_closes_idle_streams_first_and_releases() {
    let (_dir, cfg) = config(false);
    let s = blocking(|| {
        Server::start(&[
            ("RUVECTOR_CONFIG", &cfg),
            // Shedding as shipped, on a fast clock, with only the stream signal reachable: 19 of
            // 20 streams must be what puts the server at the reject level (memory and p99 out of
            // reach so the machine's state cannot decide the test).
            ("RUVECTOR__SHED__ENABLED", "true"),
            ("RUVECTOR__STREAM__MAX_STREAMS", "20"),
            ("RUVECTOR__SHED__INTERVAL_MS", "100"),
            ("RUVECTOR__SHED__COOL_DOWN_MS", "300"),
            ("RUVECTOR__SHED__IDLE_CLOSE_AFTER_MS", "3000"),
            ("RUVECTOR__SHED__MEMORY_LIMIT_MB", "1000000"),
            ("RUVECTOR__SHED__P99_TARGET_MS", "100000"),
        ])
    });
    let std_key = token("admin");
    let vip = token("vip");
    blocking(|| {
        let (st, _, _) = call(
            &s,
            "PUT",
            "/api/v1/collections/c",
            Some(&std_key),
            Some(json!({"dimension": 2})),
        );
        assert_eq!(st, 201);
    });
    // 10 busy premium streams (a ping every 100 ms) and 9 idle ones: 19 of 20 = 95%.
    let mut busy = Vec::new();
    for _ in 0..10 {
        let mut c = ws(&s, Some(&vip)).await.unwrap();
        busy.push(tokio::spawn(async move {
            let mut ok = 0u32;
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(8) {
                send(&mut c, json!({"type": "ping"})).await;
                let v = recv(&mut c).await;
                if v["type"] == "pong" {
                    ok += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (ok, c)
        }));
    }
    let mut idle = Vec::new();
    for _ in 0..9 {
        idle.push(ws(&s, Some(&std_key)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Reject level: readiness 503, new standard streams 503, premium still admitted.
    blocking(|| {
        assert_eq!(s.metric("ruvector_shed_level", &[]), 3.0, "{}", s.metrics());
        let (st, v, _) = call(&s, "GET", "/health/ready", None, None);
        assert_eq!((st, v["status"].as_str()), (503, Some("shedding")));
    });
    assert_eq!(ws(&s, Some(&std_key)).await.err(), Some(503));
    let premium_stream = ws(&s, Some(&vip)).await;
    assert!(
        premium_stream.is_ok(),
        "premium streams are admitted at the reject level"
    );
    // Non-premium requests are shed (503) or throttled (429); premium ones all served.
    blocking(|| {
        let search = json!({"vector": [1.0, 0.0], "k": 1});
        let mut shed = 0;
        for _ in 0..20 {
            let (st, v, _) = search_c(&s, Some(&std_key), Some(search.clone()));
            assert!(matches!(st, 200 | 429 | 503), "{st} {v}");
            if st == 503 {
                assert_eq!(code(&v), "overloaded");
                shed += 1;
            }
        }
        assert!(shed >= 2, "about 20% shed: {shed}");
        for _ in 0..20 {
            let (st, v, _) = search_c(&s, Some(&vip), Some(search.clone()));
            assert_eq!(st, 200, "premium is served: {v}");
        }
    });
    // Idle streams are closed first (4001); the busy ones stay open throughout.
    for mut c in idle {
        assert_eq!(close_code(&mut c).await, 4001);
    }
    drop(premium_stream);
    for b in busy {
        let (ok, _c) = b.await.unwrap();
        assert!(ok >= 40, "busy streams kept being served ({ok} pongs)");
    }
    // With the idle streams gone the load falls, and the levels are released.
    let t = Instant::now();
    loop {
        let (level, ready) = blocking(|| {
            (
                s.metric("ruvector_shed_level", &[]),
                call(&s, "GET", "/health/ready", None, None).0,
            )
        });
        if level == 0.0 && ready == 200 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "shedding did not release (level {level})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ws(&s, Some(&std_key)).await.is_ok(),
        "new streams admitted again"
    );
    blocking(|| {
        assert!(s.metric("ruvector_shed_actions_total", &["action=\"idle_closed\""]) >= 9.0);
        assert!(
            s.metric(
                "ruvector_shed_actions_total",
                &["action=\"stream_rejected\""]
            ) >= 1.0
        );
        assert!(s.metric("ruvector_shed_actions_total", &["action=\"request_shed\""]) >= 1.0);
    });
}
