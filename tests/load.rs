//! Every scenario of `load/scenarios/`, shrunk to a tiny run against a server on 127.0.0.1:0;
//! the JSON report must add up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::Server;
use ruvector_load::report::Report;
use ruvector_load::run::{run, RunOptions};
use ruvector_load::scenario::{Kind, Scenario};

fn scenario(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("load/scenarios")
        .join(format!("{name}.toml"));
    Scenario::load(&path).unwrap()
}

/// The scenario at a tiny size: few streams, little data, about `secs` seconds.
fn tiny(mut s: Scenario, streams: usize, secs: f64) -> Scenario {
    if let Some(l) = s.streams.as_mut() {
        l.count = streams;
        l.preload = l.preload.min(300);
        l.sources = 2;
        // Keep the rates' proportions, scaled to a small server and client.
        let max_rate = l.phases.iter().map(|p| p.rate).fold(0.0, f64::max);
        for p in &mut l.phases {
            if max_rate > 0.0 {
                p.rate = (p.rate / max_rate * 400.0).max(if p.rate > 0.0 { 20.0 } else { 0.0 });
            }
        }
    }
    s.cap_duration(secs);
    if let Some(a) = s.ann.as_mut() {
        a.n = 2000;
        a.nq = 50;
        a.dim = 16;
        a.ef = vec![16, 64];
    }
    s
}

fn options(s: &Server) -> RunOptions {
    RunOptions {
        server: s.addr(),
        server_pid: Some(s.pid()),
        progress: false,
        in_process: true,
    }
}

/// Counts add up, percentiles are ordered, nothing unexpected went wrong.
fn check(r: &Report, streams: usize) {
    assert_eq!(r.streams_requested, streams);
    assert_eq!(
        (r.streams_connected, r.streams_failed),
        (streams, 0),
        "{}",
        r.table()
    );
    assert_eq!(r.errors, r.errors_by_code.values().sum::<u64>());
    assert_eq!(r.errors, 0, "no errors expected: {:?}", r.errors_by_code);
    let by_kind: u64 = ["search", "insert", "ping"]
        .iter()
        .filter_map(|k| r.latency_us.get(*k))
        .map(|p| p.count)
        .sum();
    assert_eq!(by_kind, r.answered, "every answer is in one histogram");
    assert!(r.answered + r.errors <= r.sent);
    assert_eq!(
        r.series.iter().map(|p| p.rps as u64).sum::<u64>(),
        r.answered
    );
    for (k, p) in &r.latency_us {
        assert!(
            p.p50 <= p.p95 && p.p95 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.max,
            "{k}: {p:?}"
        );
    }
    // Only the streams' own closes at the end.
    assert!(
        r.closes_by_code.keys().all(|c| c == "1000" || c == "reset"),
        "{:?}",
        r.closes_by_code
    );
    let server = r.server.as_ref().expect("server figures from /proc");
    assert!(
        server.rss_before_kb > 0 && server.rss_connected_kb > 0 && server.rss_peak_kb > 0,
        "{server:?}"
    );
    assert_eq!(
        r.phases.len(),
        r.phases.iter().filter(|p| p.end_s > p.start_s).count()
    );
    let json = serde_json::to_string(r).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back.answered, r.answered);
}

#[test]
fn steady_burst_and_soak_run_tiny_and_their_reports_add_up() {
    let s = Server::start(&[]);
    for name in ["steady", "burst", "soak"] {
        let sc = tiny(scenario(name), 40, 4.0);
        let r = run(&sc, &options(&s)).unwrap();
        check(&r, 40);
        assert!(r.answered > 0, "{name}: {}", r.table());
        for k in ["search", "search_first_result"] {
            assert!(r.latency_us.contains_key(k), "{name}: {k} measured");
        }
        let first = &r.latency_us["search_first_result"];
        let total = &r.latency_us["search"];
        assert!(
            first.p50 <= total.p50,
            "the first result comes no later than the last"
        );
        if name != "burst" {
            assert!(
                r.latency_us.contains_key("event_end_to_end"),
                "{name}: subscribers heard inserts"
            );
        }
        // The chart is written.
        let svg = s.dir.join(format!("{name}.svg"));
        r.plot(&svg).unwrap();
        assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    }
}

#[test]
fn idle_scale_runs_tiny_and_reports_memory_per_stream() {
    let s = Server::start(&[("RUVECTOR__STREAM__HEARTBEAT_INTERVAL_MS", "300")]);
    let sc = tiny(scenario("idle-scale"), 200, 1.5);
    let r = run(&sc, &options(&s)).unwrap();
    check(&r, 200);
    assert_eq!((r.sent, r.answered), (0, 0));
    let server = r.server.unwrap();
    assert!(
        server.bytes_per_stream > 0.0 && server.bytes_per_stream < 65536.0,
        "{server:?}"
    );
}

#[test]
fn several_workers_split_the_streams() {
    let s = Server::start(&[]);
    let mut sc = tiny(scenario("steady"), 30, 2.0);
    sc.streams.as_mut().unwrap().max_streams_per_worker = 10;
    let r = run(&sc, &options(&s)).unwrap();
    assert_eq!(r.workers, 3);
    check(&r, 30);
}

#[test]
fn the_ann_scenario_runs_tiny() {
    let sc = tiny(scenario("ann"), 0, 1.0);
    assert_eq!(sc.kind, Kind::Ann);
    let s = Server::start(&[]);
    let r = run(&sc, &options(&s)).unwrap();
    let ann = r.ann.unwrap();
    let rows = ann["sweep"].as_array().unwrap();
    assert_eq!(
        rows.len(),
        4,
        "2 ef values, in process and over HTTP: {ann}"
    );
    assert!(rows.iter().all(|r| r["recall"].as_f64().unwrap() > 0.5));
}

#[test]
fn crash_cycles_run_tiny_and_lose_no_acknowledged_operation() {
    let a = ruvector_load::crash::CrashArgs {
        server_bin: Some(env!("CARGO_BIN_EXE_ruvector-streaming").into()),
        data_dir: None,
        cycles: 2,
        rest_writers: 1,
        ws_writers: 1,
        ids_per_writer: 30,
        min_run_ms: 200,
        max_run_ms: 400,
        server_env: vec![],
        seed: 7,
        out: None,
    };
    let r = ruvector_load::crash::crash(&a).unwrap();
    assert_eq!(r.per_cycle.len(), 2);
    assert!(r.acknowledged > 0, "{r:?}");
    assert_eq!(r.lost, 0, "{:?}", r.losses);
}
