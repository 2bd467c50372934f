//! Black-box harness: runs the real server binary on 127.0.0.1:0 with a temporary data
//! directory and drives it over HTTP like a client.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::Value;

pub mod redis_server;
pub mod regions;

pub struct Server {
    child: Child,
    pub base: String,
    pub dir: PathBuf,
    log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// A server on a fresh data directory.
    pub fn start(env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = Server::start_in(&dir, env, 0);
        s._tmp = Some(tmp);
        s
    }

    /// A server on an existing data directory (restarts); `n` tells its log file apart.
    pub fn start_in(dir: &Path, env: &[(&str, &str)], n: usize) -> Server {
        let log = dir.join(format!("server-{n}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_ruvector-streaming"))
            .env("RUVECTOR__SERVER__HOST", "127.0.0.1")
            .env("RUVECTOR__SERVER__PORT", "0")
            .env("RUVECTOR__STORAGE__DATA_DIR", dir.join("data"))
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        let _ = tx.send(addr.to_string());
                        sent = true;
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let s = Server {
            child,
            base: format!("http://{addr}"),
            dir: dir.to_path_buf(),
            log,
            _tmp: None,
        };
        s.wait_started(Duration::from_secs(120));
        s
    }

    pub fn wait_started(&self, limit: Duration) {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Ok(r) = client().get(format!("{}/health/startup", self.base)).send() {
                if r.status() == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server did not finish loading: {}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no drain, no final snapshot.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for exit; returns how long it took.
    pub fn terminate(&mut self) -> Duration {
        let t = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        t.elapsed()
    }

    /// Resident memory of the server process (kB), from /proc.
    pub fn rss_kb(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port` the server listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.base
            .trim_start_matches("http://")
            .parse()
            .expect("server address")
    }

    /// `ws://` address of a path.
    pub fn ws_url(&self, path: &str) -> String {
        format!("{}{}", self.base.replacen("http://", "ws://", 1), path)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = client().request(m, self.url(path));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(b).expect("json"));
        }
        let res = req.send().expect("request");
        let status = res.status().as_u16();
        let text = res.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub fn raw(&self, method: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let res = client()
            .request(m, self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("request");
        let status = res.status().as_u16();
        let text = res.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, v) = self.call(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    pub fn metrics(&self) -> String {
        client()
            .get(self.url("/metrics"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default()
    }

    /// Sum of a counter or gauge over the series whose labels contain every `labels` part.
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.starts_with(name)
                    && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
            })
            .filter(|l| labels.iter().all(|p| l.contains(p)))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lowercase hex SHA-256 of a token, as `[auth] keys` stores it.
pub fn sha256_hex(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Polls `f` every 50 ms until it holds or `limit` passes; answers whether it held.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

/// `n` clustered vectors (low intrinsic dimension, like embeddings; see `ruvector_load::data`).
pub fn clustered(n: usize, dim: usize, clusters: usize, spread: f32, seed: u64) -> Vec<Vec<f32>> {
    ruvector_load::data::clustered(n, 0, dim, clusters, 8, spread, seed).0
}

/// Base vectors and queries drawn from the same clusters.
pub fn clustered_with_queries(
    n: usize,
    queries: usize,
    dim: usize,
    clusters: usize,
    spread: f32,
    seed: u64,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    ruvector_load::data::clustered(n, queries, dim, clusters, 8, spread, seed)
}

/// A client WebSocket of the tests.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Runs blocking test code (the harness's HTTP client) inside a multi-thread tokio test.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Sends one JSON text frame.
pub async fn send(ws: &mut Ws, v: Value) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(v.to_string()))
        .await
        .expect("send");
}

/// The next JSON frame (WebSocket pings and pongs skipped), within 20 s.
pub async fn recv(ws: &mut Ws) -> Value {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a frame within 20 s")
            .expect("stream open")
            .expect("frame");
        match m {
            Message::Text(t) => return serde_json::from_str(&t).expect("json frame"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other @ (Message::Binary(_) | Message::Close(_) | Message::Frame(_)) => {
                panic!("unexpected frame {other:?}")
            }
        }
    }
}

/// Runs `program` in `dir` and asserts it succeeded (installing a test's node side).
pub fn run_ok(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed for this test: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `node run.mjs ARGS` in `dir`: whether it succeeded, its stdout and its stderr.
pub fn node_script(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("node")
        .arg("run.mjs")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("node is needed for this test");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
