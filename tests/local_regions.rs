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

fn get(url: &str) -> Option<serde_json::Value> {
    let res = common::client().get(url).send().ok()?;
    res.status().is_success().then(|| res.json().ok())?
}

#[test]
fn the_local_regions_script_starts_three_regions_and_tears_them_down() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_run(3, &[]);
    let redis = free_run(3, &[http, http + 1, http + 2]);
    let (http_s, redis_s) = (http.to_string(), redis.to_string());
    let dir_s = dir.path().to_str().unwrap();
    let common_args = [
        "--http-port",
        &http_s,
        "--redis-port",
        &redis_s,
        "--dir",
        dir_s,
        "--bin",
        env!("CARGO_BIN_EXE_ruvector-streaming"),
    ];
    let mut start = vec!["start"];
    start.extend_from_slice(&common_args);
    let (ok, text) = script(&start);
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
