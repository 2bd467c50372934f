//! Several instances of one region share agent coordination through the region's Redis
//! (issue 14, item 6), black box: two servers of region "us" on one real `redis-server`, shipped
//! defaults (shedding and rate limits on) unless a test says why not. Claims stay exclusive
//! across instances, agents registered on one are seen (and heartbeat) on the other, topic
//! messages reach subscribers of both in one sequence, memory is one store, a silent agent is
//! reaped once, and a new instance (empty disk) starts with the region's state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::redis_server::RedisServer;
use common::{blocking, recv, send, wait_for, Server};
use serde_json::{json, Value};
use tokio_tungstenite::connect_async;

const BASE: &str = "/api/v1/coordination";

fn instance(redis: &RedisServer, extra: &[(&str, &str)]) -> Server {
    let url = redis.url();
    let mut env = vec![
        ("RUVECTOR__SERVER__REGION", "us"),
        ("RUVECTOR__REDIS__URL", url.as_str()),
    ];
    env.extend_from_slice(extra);
    Server::start(&env)
}

/// A call that waits out shedding and rate limits (the defaults are on) and returns the rest.
fn call(s: &Server, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    loop {
        let (status, r) = s.call(method, path, body);
        if status == 429 || status == 503 && r["error"]["code"] != "unavailable" {
            std::thread::sleep(Duration::from_millis(
                r["retry_after_ms"].as_u64().unwrap_or(50).min(500),
            ));
            continue;
        }
        return (status, r);
    }
}

fn ok(s: &Server, method: &str, path: &str, body: Option<&Value>) -> Value {
    let (status, r) = call(s, method, path, body);
    assert_eq!(status, 200, "{method} {path}: {r}");
    r
}

fn agents_online(s: &Server) -> HashSet<String> {
    ok(s, "GET", &format!("{BASE}/agents?status=online"), None)["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn claims_are_exclusive_across_the_instances_of_a_region() {
    let redis = RedisServer::start(true);
    let servers = Arc::new([instance(&redis, &[]), instance(&redis, &[])]);
    // Agents register on either instance; each sees all of them.
    for i in 0..20 {
        ok(
            &servers[i % 2],
            "PUT",
            &format!("{BASE}/agents/a{i}"),
            Some(&json!({"agent_type": "w"})),
        );
    }
    for s in servers.iter() {
        assert!(
            wait_for(Duration::from_secs(5), || agents_online(s).len() == 20),
            "every instance sees the 20 agents"
        );
    }
    for i in 0..200 {
        ok(
            &servers[i % 2],
            "POST",
            &format!("{BASE}/tasks"),
            Some(&json!({"task_id": format!("t{i}"), "task_type": "j", "priority": i % 7})),
        );
    }
    // A task id is unique in the region, whichever instance is asked.
    let (status, r) = call(
        &servers[1],
        "POST",
        &format!("{BASE}/tasks"),
        Some(&json!({"task_id": "t0", "task_type": "j"})),
    );
    assert_eq!(
        (status, r["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let workers: Vec<_> = (0..20)
        .map(|i| {
            let (servers, got) = (servers.clone(), got.clone());
            std::thread::spawn(move || loop {
                // Claimed on the instance the agent did not register on, half the time, and
                // completed on the other one.
                let (claim_on, settle_on) = (&servers[(i / 2) % 2], &servers[(i / 2 + 1) % 2]);
                let r = ok(
                    claim_on,
                    "POST",
                    &format!("{BASE}/tasks/claim"),
                    Some(&json!({"agent_id": format!("a{i}")})),
                );
                if r["type"] == "no_task" {
                    return;
                }
                assert_eq!(r["task"]["assigned_to"], format!("a{i}"), "{r}");
                let id = r["task"]["task_id"].as_str().unwrap().to_owned();
                let done = ok(
                    settle_on,
                    "POST",
                    &format!("{BASE}/tasks/{id}/complete"),
                    Some(&json!({"agent_id": format!("a{i}"), "result": i})),
                );
                assert_eq!(done["task"]["status"], "completed", "{done}");
                got.lock().unwrap().push(id);
            })
        })
        .collect();
    for w in workers {
        if w.join().is_err() {
            eprintln!(
                "A: {}",
                servers[0]
                    .log_text()
                    .lines()
                    .filter(|l| l.contains("stale"))
                    .take(30)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            eprintln!(
                "B: {}",
                servers[1]
                    .log_text()
                    .lines()
                    .filter(|l| l.contains("stale"))
                    .take(30)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            panic!("worker");
        }
    }
    let got = got.lock().unwrap();
    let ids: HashSet<&String> = got.iter().collect();
    assert_eq!(got.len(), 200, "every task claimed once in the region");
    assert_eq!(ids.len(), 200, "no task handed to two agents");
    for s in servers.iter() {
        assert!(wait_for(Duration::from_secs(5), || {
            (0..200).step_by(37).all(|i| {
                ok(s, "GET", &format!("{BASE}/tasks/t{i}"), None)["task"]["status"] == "completed"
            })
        }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_memory_are_one_across_the_instances() {
    let redis = RedisServer::start(true);
    let (a, b) = blocking(|| (instance(&redis, &[]), instance(&redis, &[])));
    let mut sub_b = connect_async(b.ws_url("/api/v1/ws")).await.unwrap().0;
    send(
        &mut sub_b,
        json!({"type": "subscribe_topic", "topic": "feed", "id": "s"}),
    )
    .await;
    assert_eq!(recv(&mut sub_b).await["type"], "topic_subscribed");
    let published: Vec<u64> = blocking(|| {
        (0..20)
            .map(|n| {
                let s = if n % 2 == 0 { &a } else { &b };
                let r = ok(
                    s,
                    "POST",
                    &format!("{BASE}/topics/feed/messages"),
                    Some(&json!({"payload": {"n": n}})),
                );
                r["seq"].as_u64().unwrap()
            })
            .collect()
    });
    let distinct: HashSet<u64> = published.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        20,
        "one sequence for the region: {published:?}"
    );
    let mut heard = Vec::new();
    while heard.len() < 20 {
        let f = tokio::time::timeout(Duration::from_secs(5), recv(&mut sub_b))
            .await
            .expect("the subscriber on b hears every message within 5 s");
        if f["type"] == "message" {
            heard.push(f["payload"]["n"].as_u64().unwrap());
        }
    }
    heard.sort_unstable();
    assert_eq!(heard, (0..20).collect::<Vec<_>>());
    blocking(|| {
        let history = ok(
            &a,
            "GET",
            &format!("{BASE}/topics/feed/messages?last=50"),
            None,
        );
        assert_eq!(history["messages"].as_array().unwrap().len(), 20);
        ok(
            &a,
            "PUT",
            &format!("{BASE}/memory/notes/k1"),
            Some(&json!({"value": {"v": 1}})),
        );
        assert!(wait_for(Duration::from_secs(5), || {
            b.call("GET", &format!("{BASE}/memory/notes/k1"), None).1["value"]["v"] == 1
        }));
        // Written again on b, deleted on a: gone on both, not brought back by the older write.
        ok(
            &b,
            "PUT",
            &format!("{BASE}/memory/notes/k1"),
            Some(&json!({"value": {"v": 2}})),
        );
        assert!(wait_for(Duration::from_secs(5), || {
            a.call("GET", &format!("{BASE}/memory/notes/k1"), None).1["value"]["v"] == 2
        }));
        let r = ok(&a, "DELETE", &format!("{BASE}/memory/notes/k1"), None);
        assert_eq!(r["deleted"], true);
        assert!(wait_for(Duration::from_secs(5), || {
            b.call("GET", &format!("{BASE}/memory/notes/k1"), None).0 == 404
        }));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            a.call("GET", &format!("{BASE}/memory/notes/k1"), None).0,
            404
        );
    });
}

#[test]
fn a_silent_agent_is_reaped_once_in_the_region_and_its_task_freed() {
    // Short timers so the lease ends within the test.
    let timers = [
        ("RUVECTOR__COORDINATION__HEARTBEAT_TIMEOUT_MS", "800"),
        ("RUVECTOR__COORDINATION__SWEEP_INTERVAL_MS", "100"),
    ];
    let redis = RedisServer::start(true);
    let (a, b) = (instance(&redis, &timers), instance(&redis, &timers));
    ok(
        &a,
        "PUT",
        &format!("{BASE}/agents/quiet"),
        Some(&json!({"agent_type": "w"})),
    );
    ok(
        &b,
        "PUT",
        &format!("{BASE}/agents/busy"),
        Some(&json!({"agent_type": "w"})),
    );
    ok(
        &a,
        "POST",
        &format!("{BASE}/tasks"),
        Some(&json!({"task_id": "job", "task_type": "j"})),
    );
    assert!(wait_for(Duration::from_secs(5), || agents_online(&a).len() == 2));
    let r = ok(
        &a,
        "POST",
        &format!("{BASE}/tasks/claim"),
        Some(&json!({"agent_id": "quiet"})),
    );
    assert_eq!(r["task"]["task_id"], "job");
    // "busy" heartbeats through a (it registered on b); "quiet" is silent.
    let freed = wait_for(Duration::from_secs(6), || {
        ok(
            &a,
            "POST",
            &format!("{BASE}/agents/busy/heartbeat"),
            Some(&json!({})),
        );
        ok(&b, "GET", &format!("{BASE}/tasks/job"), None)["task"]["status"] == "pending"
    });
    assert!(freed, "the silent agent's task is pending again on b");
    let r = ok(
        &b,
        "POST",
        &format!("{BASE}/tasks/claim"),
        Some(&json!({"agent_id": "busy"})),
    );
    assert_eq!(
        (r["type"].as_str(), r["task"]["task_id"].as_str()),
        (Some("task_assigned"), Some("job"))
    );
    for s in [&a, &b] {
        assert_eq!(agents_online(s), HashSet::from(["busy".to_owned()]));
    }
    // Reaped once: one agent_left entry for "quiet" in the region's coordination stream.
    let entries = redis.cli(&["XRANGE", "ruvector:coordlog:us", "-", "+"]);
    let lefts = entries
        .lines()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "k" && w[1] == "l")
        .count();
    assert_eq!(lefts, 1, "{entries}");
}

#[test]
fn a_new_instance_starts_with_the_regions_state() {
    let redis = RedisServer::start(true);
    let a = instance(&redis, &[]);
    ok(
        &a,
        "PUT",
        &format!("{BASE}/agents/w"),
        Some(&json!({"agent_type": "w"})),
    );
    for i in 0..30 {
        ok(
            &a,
            "POST",
            &format!("{BASE}/tasks"),
            Some(&json!({"task_id": format!("t{i}"), "task_type": "j"})),
        );
    }
    ok(
        &a,
        "POST",
        &format!("{BASE}/tasks/claim"),
        Some(&json!({"agent_id": "w"})),
    );
    ok(
        &a,
        "PUT",
        &format!("{BASE}/memory/ns/k"),
        Some(&json!({"value": "kept"})),
    );
    ok(
        &a,
        "POST",
        &format!("{BASE}/topics/t/messages"),
        Some(&json!({"payload": 1})),
    );
    // A fresh data directory, as on a platform with ephemeral disks.
    let b = instance(&redis, &[]);
    assert_eq!(
        ok(&b, "GET", &format!("{BASE}/memory/ns/k"), None)["value"],
        "kept"
    );
    assert_eq!(
        ok(&b, "GET", &format!("{BASE}/tasks/t0"), None)["task"]["status"],
        "assigned"
    );
    assert_eq!(
        ok(&b, "GET", &format!("{BASE}/tasks/t29"), None)["task"]["status"],
        "pending"
    );
    let history = ok(&b, "GET", &format!("{BASE}/topics/t/messages?last=5"), None);
    assert_eq!(history["messages"][0]["payload"], 1);
    assert_eq!(agents_online(&b), HashSet::from(["w".to_owned()]));
}
