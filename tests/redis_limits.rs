//! Rate limits shared by a region's instances through its Redis: two servers on one Redis hold a
//! caller to one budget, where two servers alone would each grant it in full. Real
//! `redis-server`. The quotas are lowered from the defaults (5,000 reads/s) so that one test
//! client can exhaust them; that is what the test is about.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::{wait_for, Server};

const LIMITS: [(&str, &str); 3] = [
    ("RUVECTOR__RATE_LIMIT__READ_PER_S", "20"),
    ("RUVECTOR__RATE_LIMIT__READ_BURST", "20"),
    ("RUVECTOR__RATE_LIMIT__REGIONAL_LEASE", "5"),
];

/// Reads sent alternately to every server for `span`; how many were answered 200 (the rest
/// must be 429 rate_limited).
fn hammer(servers: &[Server], span: Duration) -> usize {
    let c = common::client();
    let t = Instant::now();
    let mut ok = 0;
    let mut n = 0usize;
    while t.elapsed() < span {
        let s = &servers[n % servers.len()];
        n += 1;
        let res = c.get(s.url("/api/v1/collections")).send().unwrap();
        match res.status().as_u16() {
            200 => ok += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(n > 500, "only {n} requests sent");
    ok
}

fn start(redis: &RedisServer, regional: &str) -> Server {
    let url = redis.url();
    let mut env: Vec<(&str, &str)> = LIMITS.to_vec();
    env.push(("REDIS_URL", url.as_str()));
    env.push(("RUVECTOR__RATE_LIMIT__REGIONAL", regional));
    let s = Server::start(&env);
    assert!(wait_for(Duration::from_secs(5), || s
        .metric("ruvector_redis_up", &[])
        == 1.0));
    s
}

#[test]
fn two_instances_of_a_region_hold_a_caller_to_one_budget() {
    let span = Duration::from_secs(2);
    // Budget over the span: burst 20 + 20/s × 2 s = 60 per limiter.
    let redis = RedisServer::start(false);
    let shared = [start(&redis, "true"), start(&redis, "true")];
    let ok_shared = hammer(&shared, span);
    // One budget, plus at most one lease (5) per instance and a little refill timing.
    assert!(
        (40..=80).contains(&ok_shared),
        "{ok_shared} reads granted by two instances sharing a budget of about 60"
    );
    assert!(shared[0].metric("ruvector_rate_limit_leases_total", &["result=\"denied\""]) > 0.0);

    // The control: the same two instances with the regional budget off (local limits only) —
    // what the shared budget must be measured against.
    let other = RedisServer::start(false);
    let alone = [start(&other, "false"), start(&other, "false")];
    let ok_alone = hammer(&alone, span);
    println!("granted in 2 s: {ok_shared} sharing one budget, {ok_alone} with local limits only");
    assert!(
        ok_alone >= 100,
        "{ok_alone} reads granted by two instances with local limits only (about 120 expected)"
    );
}
