//! `deploy/local-regions.sh` starts three regions (three servers, three redis-servers on
//! loopback, ports from its arguments), each with the others as peers, and tears them down; the
//! example multi-region config loads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::wait_for;

/// A base port with `n` free ports from it, none of them in `taken`.
fn free_run(n: u16, taken: &[u16]) -> u16 {
    let seed = std::process::id() as u16;
    for i in 0..2000u16 {
        let base = 20000 + (seed.wrapping_mul(7).wrapping_add(i * 13)) % 40000;
        let ports: Vec<u16> = (0..n).map(|k| base + k).collect();
        if ports.iter().all(|p| !taken.contains(p))
            && ports
                .iter()
                .all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

fn script(args: &[&str]) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("deploy/local-regions.sh"))
        .args(args)
        .output()
        .expect("bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Starts three regions under `dir` on free ports: (http base port, redis base port, ok, output).
fn start_three(dir: &str) -> (u16, u16, bool, String) {
    let http = free_run(3, &[]);
    let redis = free_run(3, &[http, http + 1, http + 2]);
    let (http_s, redis_s) = (http.to_string(), redis.to_string());
    let bin = env!("CARGO_BIN_EXE_ruvector-streaming");
    let (ok, text) = script(&[
        "start",
        "--http-port",
        &http_s,
        "--redis-port",
        &redis_s,
        "--dir",
        dir,
        "--bin",
        bin,
    ]);
    (http, redis, ok, text)
}

fn get(url: &str) -> Option<serde_json::Value> {
    let res = common::client().get(url).send().ok()?;
    res.status().is_success().then(|| res.json().ok())?
}

#[test]
fn the_local_regions_script_starts_three_regions_and_tears_them_down() {
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap();
    let (http, redis, ok, text) = start_three(dir_s);
    let stop = || script(&["stop", "--dir", dir_s]);
    if !ok {
        stop();
        panic!("start failed: {text}");
    }
    for (i, region) in ["us", "eu", "ap"].iter().enumerate() {
        let base = format!("http://127.0.0.1:{}", http + i as u16);
        let ready = get(&format!("{base}/health/ready")).expect("ready");
        assert_eq!(ready["region"], *region, "{ready}");
        assert!(
            wait_for(Duration::from_secs(5), || {
                common::client()
                    .get(format!("{base}/metrics"))
                    .send()
                    .and_then(|r| r.text())
                    .is_ok_and(|m| m.lines().any(|l| l == "ruvector_redis_up 1"))
            }),
            "region {region} never reached its Redis"
        );
        let config = std::fs::read_to_string(dir.path().join(region).join("config.toml")).unwrap();
        assert_eq!(config.matches("[[regions.peers]]").count(), 2, "{config}");
    }
    let (ok, text) = script(&["status", "--dir", dir_s]);
    assert!(ok && text.matches("running").count() == 3, "{text}");
    let (ok, text) = stop();
    assert!(ok, "{text}");
    for i in 0..3u16 {
        assert!(get(&format!("http://127.0.0.1:{}/health/ready", http + i)).is_none());
        assert!(std::net::TcpStream::connect(("127.0.0.1", redis + i)).is_err());
    }
}

#[test]
fn the_multi_region_example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/multi-region.example.toml");
    let s = ruvector_streaming::settings::Settings::load_from(Some(&path), &[]).unwrap();
    assert_eq!(s.server.region, "us");
    assert_eq!(s.regions.peers.len(), 2);
    assert_eq!(s.regions.peers[0].name, "eu");
}

/// How many points a collection holds in the region at `base` (scroll pages), `None` if missing.
fn count_points(base: &str, collection: &str) -> Option<usize> {
    let mut n = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/v1/collections/{collection}/points?limit=1000");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = get(&url)?;
        n += page["points"].as_array()?.len();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Some(n),
        }
    }
}

fn put_points(base: &str, from: usize, to: usize) {
    let points: Vec<serde_json::Value> = (from..to)
        .map(|i| serde_json::json!({"id": format!("p{i}"), "vector": [i as f32, 1.0]}))
        .collect();
    let r = common::client()
        .put(format!("{base}/api/v1/collections/c/points"))
        .json(&serde_json::json!({ "points": points }))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap_or_default());
}

/// The shell block of docs/OPERATIONS.md's region recovery, between the rehearsal markers.
fn runbook_block() -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/OPERATIONS.md"))
            .unwrap();
    let inner = doc
        .split("<!-- rehearsal -->")
        .nth(1)
        .and_then(|r| r.split("<!-- /rehearsal -->").next())
        .expect("a rehearsal block in docs/OPERATIONS.md");
    inner
        .lines()
        .filter(|l| !l.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_runbooks_region_recovery_followed_literally_brings_a_killed_region_back() {
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap();
    let (http, _, ok, text) = start_three(dir_s);
    let stop = || script(&["stop", "--dir", dir_s]);
    if !ok {
        stop();
        panic!("start failed: {text}");
    }
    let base = |i: u16| format!("http://127.0.0.1:{}", http + i);
    let (us, eu, ap) = (base(0), base(1), base(2));
    let result = std::panic::catch_unwind(|| {
        let r = common::client()
            .put(format!("{us}/api/v1/collections/c"))
            .json(&serde_json::json!({"dimension": 2}))
            .send()
            .unwrap();
        assert!(r.status().is_success());
        put_points(&us, 0, 200);
        for region in [&eu, &ap] {
            assert!(wait_for(Duration::from_secs(10), || count_points(
                region, "c"
            ) == Some(200)));
        }
        // ap is lost with its disk; the others keep writing.
        let (ok, text) = script(&["kill", "ap", "--wipe", "--dir", dir_s]);
        assert!(ok, "{text}");
        put_points(&us, 200, 300);
        put_points(&eu, 300, 400);
        // The runbook's steps, literally.
        let out = Command::new("bash")
            .arg("-euo")
            .arg("pipefail")
            .arg("-c")
            .arg(runbook_block())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("DIR", dir_s)
            .env("REGION", "ap")
            .env("PORT", (http + 2).to_string())
            .env("PEER", "us")
            .env("SURVIVOR_PORT", (http + 1).to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Ready (step 3) means caught up: ap holds every point its peers wrote, at once.
        let log = std::fs::read_to_string(dir.path().join("ap/server.log")).unwrap_or_default();
        let notable: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("caught up"))
            .collect();
        assert_eq!(
            count_points(&ap, "c"),
            Some(400),
            "ap caught up from its peers; its log:\n{}",
            notable.join("\n")
        );
    });
    stop();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
