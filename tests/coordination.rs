//! Agent coordination, black box (PROTOCOL.md §Agent coordination): every frame on the
//! WebSocket, the REST mirror, exclusive claims under concurrency, leases of silent agents,
//! topic order, durability across `kill -9`, and tenants kept apart. Defaults as shipped
//! (shedding and rate limits on) unless a test says why not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{blocking, recv, send, Server, Ws};
use serde_json::{json, Value};
use tokio_tungstenite::connect_async;

async fn connect(s: &Server, token: Option<&str>) -> Ws {
    let url = match token {
        Some(t) => s.ws_url(&format!("/api/v1/ws?token={t}")),
        None => s.ws_url("/api/v1/ws"),
    };
    connect_async(url).await.expect("ws connect").0
}

/// Sends a request and returns the reply with its id (events in between are kept aside).
async fn ask(ws: &mut Ws, mut v: Value, events: &mut Vec<Value>) -> Value {
    let id = format!("r{}", events.len() + rand_id());
    v["id"] = json!(id);
    send(ws, v).await;
    loop {
        let f = recv(ws).await;
        if f["id"] == json!(id) {
            return f;
        }
        events.push(f);
    }
}

fn rand_id() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_coordination_frame_answers_as_the_protocol_says() {
    let s = blocking(|| Server::start(&[]));
    let mut a = connect(&s, None).await;
    let mut b = connect(&s, None).await;
    let mut ev_a = Vec::new();
    let mut ev_b = Vec::new();
    let reg = |id: &str, caps: Value| json!({"type": "agent_register", "agent_id": id, "agent_type": "coder", "capabilities": caps, "swarm": "s1"});
    let r = ask(&mut a, reg("alice", json!(["rust"])), &mut ev_a).await;
    assert_eq!(r["type"], "agent_registered");
    assert_eq!(r["agent"]["status"], "online");
    assert_eq!(r["agent"]["swarm"], "s1");
    let r = ask(&mut b, reg("bob", json!([])), &mut ev_b).await;
    assert_eq!(r["type"], "agent_registered");
    // Alice's stream hears Bob join her swarm.
    let joined = recv(&mut a).await;
    assert_eq!(
        (
            joined["type"].as_str(),
            joined["agent"]["agent_id"].as_str()
        ),
        (Some("agent_joined"), Some("bob"))
    );

    let r = ask(
        &mut a,
        json!({"type": "heartbeat", "agent_id": "alice", "metrics": {"cpu": 0.5}}),
        &mut ev_a,
    )
    .await;
    assert_eq!(
        (r["type"].as_str(), r["agent_id"].as_str()),
        (Some("heartbeat_ack"), Some("alice"))
    );
    let r = ask(
        &mut a,
        json!({"type": "heartbeat", "agent_id": "nobody"}),
        &mut ev_a,
    )
    .await;
    assert_eq!(
        (r["type"].as_str(), r["code"].as_str()),
        (Some("error"), Some("not_found"))
    );
    let r = ask(
        &mut a,
        json!({"type": "agents", "swarm": "s1", "status": "online"}),
        &mut ev_a,
    )
    .await;
    assert_eq!(r["agents"].as_array().unwrap().len(), 2);

    let create = |id: &str, priority: Value, caps: Value, emb: Value| {
        json!({"type": "task_create", "task_id": id, "task_type": "build", "priority": priority,
               "task_data": {"repo": id}, "required_capabilities": caps, "embedding": emb,
               "max_retries": 1, "swarm": "s1"})
    };
    let r = ask(
        &mut a,
        create("t-low", json!("low"), json!([]), json!([1.0, 0.0])),
        &mut ev_a,
    )
    .await;
    assert_eq!(
        (r["type"].as_str(), r["task_id"].as_str()),
        (Some("task_created"), Some("t-low"))
    );
    ask(
        &mut a,
        create("t-rust", json!(90), json!(["rust"]), json!([0.0, 1.0])),
        &mut ev_a,
    )
    .await;
    let r = ask(
        &mut a,
        create("t-rust", json!(1), json!([]), json!(null)),
        &mut ev_a,
    )
    .await;
    assert_eq!(r["code"], "conflict", "a task id is taken once");
    let r = ask(
        &mut a,
        create("t-bad", json!("urgent"), json!([]), json!(null)),
        &mut ev_a,
    )
    .await;
    assert_eq!(r["code"], "invalid_argument");

    // Bob lacks `rust`: he gets the low-priority task; Alice the rust one.
    let r = ask(
        &mut b,
        json!({"type": "task_claim", "agent_id": "bob"}),
        &mut ev_b,
    )
    .await;
    assert_eq!(
        (r["type"].as_str(), r["task"]["task_id"].as_str()),
        (Some("task_assigned"), Some("t-low"))
    );
    assert_eq!(r["task"]["assigned_to"], "bob");
    let r = ask(
        &mut b,
        json!({"type": "task_claim", "agent_id": "bob"}),
        &mut ev_b,
    )
    .await;
    assert_eq!(r["type"], "no_task");
    let r = ask(
        &mut a,
        json!({"type": "task_claim", "agent_id": "alice"}),
        &mut ev_a,
    )
    .await;
    assert_eq!(r["task"]["task_id"], "t-rust");
    let r = ask(
        &mut b,
        json!({"type": "task_complete", "task_id": "t-rust", "agent_id": "bob", "result": 1}),
        &mut ev_b,
    )
    .await;
    assert_eq!(r["code"], "conflict", "only the holder completes");
    let r = ask(&mut a, json!({"type": "task_complete", "task_id": "t-rust", "agent_id": "alice", "result": {"ok": true}}), &mut ev_a).await;
    assert_eq!(
        (r["type"].as_str(), r["task"]["status"].as_str()),
        (Some("task_completed"), Some("completed"))
    );
    assert_eq!(r["task"]["result"], json!({"ok": true}));
    let r = ask(
        &mut b,
        json!({"type": "task_fail", "task_id": "t-low", "agent_id": "bob", "error": "flaky"}),
        &mut ev_b,
    )
    .await;
    assert_eq!(
        (r["task"]["status"].as_str(), r["task"]["retries"].as_u64()),
        (Some("pending"), Some(1))
    );
    ask(
        &mut b,
        json!({"type": "task_claim", "agent_id": "bob"}),
        &mut ev_b,
    )
    .await;
    let r = ask(
        &mut b,
        json!({"type": "task_fail", "task_id": "t-low", "agent_id": "bob", "error": "again"}),
        &mut ev_b,
    )
    .await;
    assert_eq!(
        r["task"]["status"], "failed",
        "max_retries 1: the second failure is final"
    );
    let r = ask(
        &mut a,
        json!({"type": "task_status", "task_id": "t-low"}),
        &mut ev_a,
    )
    .await;
    assert_eq!(
        (r["type"].as_str(), r["task"]["error"].as_str()),
        (Some("task"), Some("again"))
    );
    assert!(r["task"].get("embedding").is_none());
    let r = ask(
        &mut a,
        json!({"type": "similar_tasks", "embedding": [0.1, 1.0], "k": 1}),
        &mut ev_a,
    )
    .await;
    assert_eq!(r["tasks"][0]["task"]["task_id"], "t-rust");
    assert!(r["tasks"][0]["score"].as_f64().unwrap() > 0.9);

    // Topics: a late subscriber gets the last N, then live messages in order.
    for n in 0..3 {
        let r = ask(
            &mut a,
            json!({"type": "publish", "topic": "news", "ordering_key": "k", "payload": {"n": n}}),
            &mut ev_a,
        )
        .await;
        assert_eq!(
            (r["type"].as_str(), r["seq"].as_u64()),
            (Some("published"), Some(n + 1))
        );
    }
    let r = ask(
        &mut b,
        json!({"type": "subscribe_topic", "topic": "news", "last": 2}),
        &mut ev_b,
    )
    .await;
    assert_eq!(r["type"], "topic_subscribed");
    let last: Vec<u64> = [recv(&mut b).await, recv(&mut b).await]
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(last, [2, 3]);
    ask(
        &mut a,
        json!({"type": "publish", "topic": "news", "payload": "live"}),
        &mut ev_a,
    )
    .await;
    let m = recv(&mut b).await;
    assert_eq!(
        (m["type"].as_str(), m["payload"].as_str(), m["seq"].as_u64()),
        (Some("message"), Some("live"), Some(4))
    );
    let r = ask(
        &mut b,
        json!({"type": "unsubscribe_topic", "topic": "news"}),
        &mut ev_b,
    )
    .await;
    assert_eq!(r["type"], "topic_unsubscribed");

    // Memory.
    let r = ask(&mut a, json!({"type": "memory_store", "namespace": "kb", "key": "doc:1", "value": {"t": "one"}, "embedding": [1.0, 0.0]}), &mut ev_a).await;
    assert_eq!(r["type"], "memory_stored");
    ask(&mut a, json!({"type": "memory_store", "namespace": "kb", "key": "doc:2", "value": "two", "embedding": [0.0, 1.0], "ttl": 3600}), &mut ev_a).await;
    ask(
        &mut a,
        json!({"type": "memory_store", "namespace": "kb", "key": "other", "value": 3}),
        &mut ev_a,
    )
    .await;
    let r = ask(
        &mut b,
        json!({"type": "memory_retrieve", "namespace": "kb", "key": "doc:2"}),
        &mut ev_b,
    )
    .await;
    assert_eq!(
        (r["type"].as_str(), r["value"].as_str()),
        (Some("memory"), Some("two"))
    );
    assert!(r["expires_at"].as_u64().unwrap() > r["created_at"].as_u64().unwrap());
    let r = ask(
        &mut b,
        json!({"type": "memory_search", "namespace": "kb", "vector": [0.9, 0.1], "k": 1}),
        &mut ev_b,
    )
    .await;
    assert_eq!(
        (r["type"].as_str(), r["results"][0]["key"].as_str()),
        (Some("memory_results"), Some("doc:1"))
    );
    let r = ask(
        &mut b,
        json!({"type": "memory_search", "namespace": "kb", "pattern": "doc:*", "k": 10}),
        &mut ev_b,
    )
    .await;
    assert_eq!(r["results"].as_array().unwrap().len(), 2);
    let r = ask(
        &mut b,
        json!({"type": "memory_delete", "namespace": "kb", "key": "doc:1"}),
        &mut ev_b,
    )
    .await;
    assert_eq!(
        (r["type"].as_str(), r["deleted"].as_bool()),
        (Some("memory_deleted"), Some(true))
    );
    let r = ask(
        &mut b,
        json!({"type": "memory_retrieve", "namespace": "kb", "key": "doc:1"}),
        &mut ev_b,
    )
    .await;
    assert_eq!(r["code"], "not_found");
}

#[test]
fn the_rest_mirror_serves_the_same_operations() {
    let s = Server::start(&[]);
    let base = "/api/v1/coordination";
    let r = s.ok(
        "PUT",
        &format!("{base}/agents/w1"),
        Some(&json!({"agent_type": "worker", "capabilities": ["x"]})),
    );
    assert_eq!(
        (r["type"].as_str(), r["agent"]["swarm"].as_str()),
        (Some("agent_registered"), Some("default"))
    );
    let r = s.ok(
        "POST",
        &format!("{base}/agents/w1/heartbeat"),
        Some(&json!({})),
    );
    assert_eq!(r["type"], "heartbeat_ack");
    let r = s.ok("GET", &format!("{base}/agents?status=online"), None);
    assert_eq!(r["agents"][0]["agent_id"], "w1");
    let r = s.ok(
        "POST",
        &format!("{base}/tasks"),
        Some(&json!({"task_type": "job", "priority": "high", "task_data": {"a": 1}})),
    );
    let id = r["task_id"].as_str().unwrap().to_owned();
    assert!(!id.is_empty(), "an id is assigned");
    let r = s.ok(
        "POST",
        &format!("{base}/tasks/claim"),
        Some(&json!({"agent_id": "w1"})),
    );
    assert_eq!(
        (r["type"].as_str(), r["task"]["priority"].as_u64()),
        (Some("task_assigned"), Some(75))
    );
    let r = s.ok(
        "POST",
        &format!("{base}/tasks/{id}/complete"),
        Some(&json!({"agent_id": "w1", "result": "done"})),
    );
    assert_eq!(r["task"]["status"], "completed");
    let (status, r) = s.call(
        "POST",
        &format!("{base}/tasks/{id}/fail"),
        Some(&json!({"agent_id": "w1", "error": "x"})),
    );
    assert_eq!(
        (status, r["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    assert_eq!(
        s.ok("GET", &format!("{base}/tasks/{id}"), None)["task"]["result"],
        "done"
    );
    let (status, _) = s.call("GET", &format!("{base}/tasks/nope"), None);
    assert_eq!(status, 404);
    let r = s.ok(
        "POST",
        &format!("{base}/tasks/claim"),
        Some(&json!({"agent_id": "w1"})),
    );
    assert_eq!(r["type"], "no_task");
    let r = s.ok(
        "POST",
        &format!("{base}/tasks/similar"),
        Some(&json!({"embedding": [1.0], "k": 3})),
    );
    assert_eq!(r["tasks"], json!([]));
    for n in 0..3 {
        let r = s.ok(
            "POST",
            &format!("{base}/topics/t/messages"),
            Some(&json!({"payload": n})),
        );
        assert_eq!(r["seq"], n + 1);
    }
    let r = s.ok("GET", &format!("{base}/topics/t/messages?last=2"), None);
    let seqs: Vec<u64> = r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 3]);
    s.ok(
        "PUT",
        &format!("{base}/memory/ns/k1"),
        Some(&json!({"value": {"v": 1}, "embedding": [0.0, 1.0]})),
    );
    assert_eq!(
        s.ok("GET", &format!("{base}/memory/ns/k1"), None)["value"],
        json!({"v": 1})
    );
    let r = s.ok(
        "POST",
        &format!("{base}/memory/ns/search"),
        Some(&json!({"vector": [0.0, 1.0], "k": 5})),
    );
    assert_eq!(r["results"][0]["key"], "k1");
    assert_eq!(
        s.ok("DELETE", &format!("{base}/memory/ns/k1"), None)["deleted"],
        true
    );
    assert_eq!(
        s.ok("DELETE", &format!("{base}/memory/ns/k1"), None)["deleted"],
        false
    );
    let long = "*".repeat(300);
    let search = json!({ "pattern": long });
    let (status, _) = s.call("POST", &format!("{base}/memory/ns/search"), Some(&search));
    assert_eq!(status, 400, "a glob is bounded");
    let (status, r) = s.call(
        "PUT",
        &format!("{base}/memory/ns/k2"),
        Some(&json!({"nope": 1})),
    );
    assert_eq!(
        (status, r["error"]["code"].as_str()),
        (400, Some("invalid_argument"))
    );
}

#[test]
fn fifty_concurrent_claimers_never_share_a_task_and_lose_none() {
    let s = Arc::new(Server::start(&[]));
    let base = "/api/v1/coordination";
    for i in 0..50 {
        s.ok(
            "PUT",
            &format!("{base}/agents/a{i}"),
            Some(&json!({"agent_type": "w"})),
        );
    }
    for i in 0..300 {
        let p = i % 101;
        s.ok(
            "POST",
            &format!("{base}/tasks"),
            Some(&json!({"task_id": format!("t{i}"), "task_type": "j", "priority": p})),
        );
    }
    let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let workers: Vec<_> = (0..50)
        .map(|i| {
            let (s, got) = (s.clone(), got.clone());
            std::thread::spawn(move || loop {
                let (status, r) = s.call(
                    "POST",
                    &format!("{base}/tasks/claim"),
                    Some(&json!({"agent_id": format!("a{i}")})),
                );
                if status == 429 || status == 503 {
                    std::thread::sleep(Duration::from_millis(
                        r["retry_after_ms"].as_u64().unwrap_or(100),
                    ));
                    continue;
                }
                assert_eq!(status, 200, "{r}");
                if r["type"] == "no_task" {
                    return;
                }
                assert_eq!(r["task"]["assigned_to"], format!("a{i}"));
                let id = r["task"]["task_id"].as_str().unwrap().to_owned();
                got.lock().unwrap().push((id, format!("a{i}")));
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let got = got.lock().unwrap();
    let ids: HashSet<&String> = got.iter().map(|(t, _)| t).collect();
    assert_eq!(got.len(), 300, "every task claimed exactly once");
    assert_eq!(ids.len(), 300, "no task handed to two agents");
    let agents: HashSet<&String> = got.iter().map(|(_, a)| a).collect();
    assert!(
        agents.len() > 10,
        "claims spread over the agents: {}",
        agents.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_goes_offline_and_its_task_is_claimed_again() {
    // Short timers so the lease ends within the test.
    let s = blocking(|| {
        Server::start(&[
            ("RUVECTOR__COORDINATION__HEARTBEAT_TIMEOUT_MS", "600"),
            ("RUVECTOR__COORDINATION__SWEEP_INTERVAL_MS", "100"),
        ])
    });
    let mut watcher = connect(&s, None).await;
    let mut ev = Vec::new();
    ask(
        &mut watcher,
        json!({"type": "agent_register", "agent_id": "watch", "agent_type": "w"}),
        &mut ev,
    )
    .await;
    blocking(|| {
        s.ok(
            "PUT",
            "/api/v1/coordination/agents/quiet",
            Some(&json!({"agent_type": "w"})),
        );
        s.ok(
            "POST",
            "/api/v1/coordination/tasks",
            Some(&json!({"task_id": "job", "task_type": "j"})),
        );
        let r = s.ok(
            "POST",
            "/api/v1/coordination/tasks/claim",
            Some(&json!({"agent_id": "quiet"})),
        );
        assert_eq!(r["task"]["task_id"], "job");
    });
    // The watcher keeps heartbeating; "quiet" does not.
    let mut left = None;
    for _ in 0..40 {
        let r = ask(
            &mut watcher,
            json!({"type": "heartbeat", "agent_id": "watch"}),
            &mut ev,
        )
        .await;
        assert_eq!(r["type"], "heartbeat_ack");
        if let Some(e) = ev.iter().find(|e| e["type"] == "agent_left") {
            left = Some(e.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = left.expect("agent_left within 4 s");
    assert_eq!(left["agent_id"], "quiet");
    let r = ask(
        &mut watcher,
        json!({"type": "task_claim", "agent_id": "watch"}),
        &mut ev,
    )
    .await;
    assert_eq!(
        (r["type"].as_str(), r["task"]["task_id"].as_str()),
        (Some("task_assigned"), Some("job"))
    );
    let r = ask(
        &mut watcher,
        json!({"type": "agents", "status": "offline"}),
        &mut ev,
    )
    .await;
    assert_eq!(r["agents"][0]["agent_id"], "quiet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_each_ordering_key_arrive_in_order_under_concurrent_publishers() {
    let s = Arc::new(blocking(|| Server::start(&[])));
    let mut sub = connect(&s, None).await;
    let mut ev = Vec::new();
    let r = ask(
        &mut sub,
        json!({"type": "subscribe_topic", "topic": "feed"}),
        &mut ev,
    )
    .await;
    assert_eq!(r["type"], "topic_subscribed");
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let s = s.clone();
            std::thread::spawn(move || {
                for n in 0..50 {
                    s.ok(
                        "POST",
                        "/api/v1/coordination/topics/feed/messages",
                        Some(&json!({"ordering_key": format!("k{p}"), "payload": n})),
                    );
                }
            })
        })
        .collect();
    let mut per_key: HashMap<String, Vec<u64>> = HashMap::new();
    let mut seqs = Vec::new();
    for _ in 0..200 {
        let m = recv(&mut sub).await;
        assert_eq!(m["type"], "message");
        seqs.push(m["seq"].as_u64().unwrap());
        per_key
            .entry(m["ordering_key"].as_str().unwrap().to_owned())
            .or_default()
            .push(m["payload"].as_u64().unwrap());
    }
    for p in publishers {
        p.join().unwrap();
    }
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seq has no gap and no reorder"
    );
    assert_eq!(per_key.len(), 4);
    for (k, v) in per_key {
        assert_eq!(v, (0..50).collect::<Vec<u64>>(), "key {k} in publish order");
    }
}

#[test]
fn tasks_topics_and_memory_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &[], 0);
    s.wait_started(Duration::from_secs(30));
    let base = "/api/v1/coordination";
    s.ok(
        "PUT",
        &format!("{base}/agents/w"),
        Some(&json!({"agent_type": "w"})),
    );
    for i in 0..20 {
        s.ok(
            "POST",
            &format!("{base}/tasks"),
            Some(&json!({"task_id": format!("t{i}"), "task_type": "j", "priority": i})),
        );
    }
    let claimed = s.ok(
        "POST",
        &format!("{base}/tasks/claim"),
        Some(&json!({"agent_id": "w"})),
    );
    assert_eq!(claimed["task"]["task_id"], "t19");
    s.ok(
        "POST",
        &format!("{base}/tasks/t19/complete"),
        Some(&json!({"agent_id": "w", "result": 42})),
    );
    s.ok(
        "POST",
        &format!("{base}/topics/log/messages"),
        Some(&json!({"payload": "hello"})),
    );
    s.ok(
        "PUT",
        &format!("{base}/memory/ns/k"),
        Some(&json!({"value": "kept", "embedding": [1.0, 2.0]})),
    );
    s.kill9();
    let s = Server::start_in(dir.path(), &[], 1);
    s.wait_started(Duration::from_secs(30));
    let t = s.ok("GET", &format!("{base}/tasks/t19"), None);
    assert_eq!(
        (t["task"]["status"].as_str(), t["task"]["result"].as_u64()),
        (Some("completed"), Some(42))
    );
    assert_eq!(
        s.ok("GET", &format!("{base}/tasks/t3"), None)["task"]["status"],
        "pending"
    );
    assert_eq!(
        s.ok("GET", &format!("{base}/memory/ns/k"), None)["value"],
        "kept"
    );
    let r = s.ok("GET", &format!("{base}/topics/log/messages?last=5"), None);
    assert_eq!(r["messages"][0]["payload"], "hello");
    // The order of the queue survived too: the next claim is the highest priority left.
    s.ok(
        "PUT",
        &format!("{base}/agents/w2"),
        Some(&json!({"agent_type": "w"})),
    );
    let r = s.ok(
        "POST",
        &format!("{base}/tasks/claim"),
        Some(&json!({"agent_id": "w2"})),
    );
    assert_eq!(r["task"]["task_id"], "t18");
}

#[test]
fn another_tenant_sees_nothing_and_coordination_needs_its_scope() {
    let dir = tempfile::tempdir().unwrap();
    let key = |name: &str, scopes: &str, tenant: &str| {
        format!(
            "{{ name = \"{name}\", sha256 = \"{}\", scopes = [{scopes}], tenant = \"{tenant}\" }}",
            common::sha256_hex(name)
        )
    };
    let cfg = dir.path().join("auth.toml");
    std::fs::write(
        &cfg,
        format!(
            "[auth]\nkeys = [\n {},\n {},\n {},\n]\n",
            key("acme-agent", "\"coordinate\"", "acme"),
            key("beta-agent", "\"coordinate\", \"read\"", "beta"),
            key("acme-reader", "\"read\", \"write\"", "acme"),
        ),
    )
    .unwrap();
    let s = Server::start(&[("RUVECTOR_CONFIG", cfg.to_str().unwrap())]);
    let call = |token: &str, method: &str, path: &str, body: Option<Value>| {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = common::client().request(m, s.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().unwrap();
        let status = res.status().as_u16();
        (status, res.json::<Value>().unwrap_or(Value::Null))
    };
    let base = "/api/v1/coordination";
    assert_eq!(
        call(
            "acme-agent",
            "PUT",
            &format!("{base}/agents/a"),
            Some(json!({"agent_type": "w"}))
        )
        .0,
        200
    );
    assert_eq!(
        call(
            "acme-agent",
            "POST",
            &format!("{base}/tasks"),
            Some(json!({"task_id": "secret", "task_type": "j"}))
        )
        .0,
        200
    );
    assert_eq!(
        call(
            "acme-agent",
            "PUT",
            &format!("{base}/memory/ns/k"),
            Some(json!({"value": 1, "embedding": [1.0, 0.0]}))
        )
        .0,
        200
    );
    assert_eq!(
        call(
            "acme-agent",
            "POST",
            &format!("{base}/topics/t/messages"),
            Some(json!({"payload": 1}))
        )
        .0,
        200
    );
    // Beta: nothing of acme's exists for it.
    assert_eq!(
        call("beta-agent", "GET", &format!("{base}/tasks/secret"), None).0,
        404
    );
    assert_eq!(
        call("beta-agent", "GET", &format!("{base}/memory/ns/k"), None).0,
        404
    );
    let (_, r) = call(
        "beta-agent",
        "GET",
        &format!("{base}/topics/t/messages?last=10"),
        None,
    );
    assert_eq!(r["messages"], json!([]));
    let (_, r) = call("beta-agent", "GET", &format!("{base}/agents"), None);
    assert_eq!(r["agents"], json!([]));
    let (_, r) = call(
        "beta-agent",
        "POST",
        &format!("{base}/memory/ns/search"),
        Some(json!({"vector": [1.0, 0.0], "k": 5})),
    );
    assert_eq!(r["results"], json!([]), "acme's embeddings are not beta's");
    let (_, r) = call("beta-agent", "GET", "/api/v1/collections", None);
    assert_eq!(
        r["collections"],
        json!([]),
        "nor is acme's memory collection"
    );
    let (_, r) = call(
        "acme-agent",
        "POST",
        &format!("{base}/memory/ns/search"),
        Some(json!({"vector": [1.0, 0.1], "k": 5})),
    );
    assert_eq!(r["results"][0]["key"], "k");
    let (_, r) = call("acme-reader", "GET", "/api/v1/collections", None);
    assert_eq!(r["collections"][0]["name"], "coordination-memory");
    call(
        "beta-agent",
        "PUT",
        &format!("{base}/agents/b"),
        Some(json!({"agent_type": "w"})),
    );
    let (_, r) = call(
        "beta-agent",
        "POST",
        &format!("{base}/tasks/claim"),
        Some(json!({"agent_id": "b"})),
    );
    assert_eq!(r["type"], "no_task");
    // Same tenant without the `coordinate` scope: refused.
    let (status, r) = call("acme-reader", "GET", &format!("{base}/tasks/secret"), None);
    assert_eq!(
        (status, r["error"]["code"].as_str()),
        (403, Some("permission_denied"))
    );
    assert_eq!(
        call("nobody", "GET", &format!("{base}/agents"), None).0,
        401
    );
}
