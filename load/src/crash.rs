//! `ruvector-load crash`: the crash-cycle benchmark. N cycles of: start the server on one data
//! directory, run concurrent writers over REST (upserts, patches, deletes) and WebSocket
//! (inserts, deletes), `kill -9` it at a random moment, restart, and check every id against
//! the acknowledged operations: each acknowledged upsert present with its latest acknowledged
//! value, each acknowledged delete absent. A write in flight at the kill may land or not; every
//! other difference is a lost (or resurrected) write.
//!
//! Each writer owns its ids and sends one request at a time, so per id the server's state after
//! a restart must be the last acknowledged state or, at most, the one unacknowledged op.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::client::http_client;
use crate::data::Rng;

const COLLECTION: &str = "crash";
const DIM: usize = 8;

#[derive(Debug, Clone, clap::Args)]
pub struct CrashArgs {
    /// The server binary (default: `ruvector-streaming` beside this one).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Data directory (default: a new temporary one, removed at the end).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 20)]
    pub cycles: usize,
    #[arg(long, default_value_t = 2)]
    pub rest_writers: usize,
    #[arg(long, default_value_t = 2)]
    pub ws_writers: usize,
    /// Ids each writer owns.
    #[arg(long, default_value_t = 200)]
    pub ids_per_writer: usize,
    /// The kill lands this many ms after the writers start, at least…
    #[arg(long, default_value_t = 300)]
    pub min_run_ms: u64,
    /// …and at most.
    #[arg(long, default_value_t = 3000)]
    pub max_run_ms: u64,
    /// Extra `KEY=VALUE` environment for the server (e.g. RUVECTOR__STORAGE__FSYNC=always).
    #[arg(long = "server-env")]
    pub server_env: Vec<String>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// JSON report path.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// A point's state as the writers know it: absent, or present with a version (vector[0]) and
/// metadata.
#[derive(Debug, Clone, PartialEq)]
enum State {
    Absent,
    Present { version: u64, meta: Value },
}

/// Per id: the last acknowledged state, and the state of an op sent but never answered.
#[derive(Debug, Clone)]
struct Expect {
    acked: State,
    uncertain: Option<State>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct CycleReport {
    pub cycle: usize,
    pub restart_ms: u64,
    pub acknowledged: u64,
    pub refused: u64,
    pub in_flight_at_kill: u64,
    pub lost: u64,
    pub points: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct CrashReport {
    pub cycles: usize,
    pub acknowledged: u64,
    pub refused: u64,
    pub lost: u64,
    pub restart_ms_p50: u64,
    pub restart_ms_max: u64,
    pub per_cycle: Vec<CycleReport>,
    /// The first few differences, for diagnosis.
    pub losses: Vec<String>,
}

struct Running {
    child: Child,
    base: String,
    started: Duration,
}

fn server_bin(a: &CrashArgs) -> Result<PathBuf, String> {
    if let Some(p) = &a.server_bin {
        return Ok(p.clone());
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    Ok(me.with_file_name("ruvector-streaming"))
}

fn start(bin: &Path, data: &Path, env: &[(String, String)], n: usize) -> Result<Running, String> {
    let t = Instant::now();
    let log = std::fs::File::create(data.with_extension(format!("server-{n}.log")))
        .map_err(|e| e.to_string())?;
    let mut child = Command::new(bin)
        .env("RUVECTOR__SERVER__HOST", "127.0.0.1")
        .env("RUVECTOR__SERVER__PORT", "0")
        .env("RUVECTOR__STORAGE__DATA_DIR", data)
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(300))
        .map_err(|_| "the server did not start (see its log beside the data directory)")?;
    let base = format!("http://{addr}");
    let client = http_client();
    while t.elapsed() < Duration::from_secs(600) {
        if let Ok(r) = client.get(format!("{base}/health/startup")).send() {
            if r.status() == 200 {
                return Ok(Running {
                    child,
                    base,
                    started: t.elapsed(),
                });
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err("the server did not finish loading".into())
}

fn vector(version: u64) -> Vec<f32> {
    let mut v = vec![0.5f32; DIM];
    v[0] = version as f32;
    v
}

/// What one op would make of an id, given the state it is in.
fn after_patch(state: &State, patch: &Value) -> State {
    match state {
        State::Absent => State::Absent,
        State::Present { version, meta } => {
            let mut m = meta.as_object().cloned().unwrap_or_default();
            if let Some(p) = patch.as_object() {
                for (k, v) in p {
                    m.insert(k.clone(), v.clone());
                }
            }
            State::Present {
                version: *version,
                meta: Value::Object(m),
            }
        }
    }
}

/// How a request ended.
enum Outcome {
    Acked,
    /// A definitive refusal (4xx, 429, 503): not applied.
    Refused(Option<Duration>),
    /// No answer: it may or may not have been applied.
    Unknown,
}

struct Writer {
    ids: Vec<String>,
    expect: HashMap<String, Expect>,
    rng: Rng,
    next_version: u64,
    acked: u64,
    refused: u64,
}

impl Writer {
    fn pick(&mut self) -> (String, u64) {
        let i = (self.rng.next_u64() % self.ids.len() as u64) as usize;
        self.next_version += 1;
        (self.ids[i].clone(), self.next_version)
    }

    fn settle(&mut self, id: &str, next: State, outcome: Outcome) -> bool {
        let e = self.expect.entry(id.to_owned()).or_insert(Expect {
            acked: State::Absent,
            uncertain: None,
        });
        match outcome {
            Outcome::Acked => {
                e.acked = next;
                self.acked += 1;
                true
            }
            Outcome::Refused(wait) => {
                self.refused += 1;
                if let Some(w) = wait {
                    std::thread::sleep(w.min(Duration::from_secs(2)));
                }
                true
            }
            Outcome::Unknown => {
                e.uncertain = Some(next);
                false
            }
        }
    }

    fn current(&self, id: &str) -> State {
        self.expect
            .get(id)
            .map_or(State::Absent, |e| e.acked.clone())
    }
}

fn classify(res: reqwest::Result<reqwest::blocking::Response>) -> Outcome {
    match res {
        Ok(r) if r.status().is_success() => Outcome::Acked,
        Ok(r) if r.status() == 404 => Outcome::Acked,
        Ok(r) => {
            let wait = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .map(Duration::from_secs);
            Outcome::Refused(wait)
        }
        Err(_) => Outcome::Unknown,
    }
}

fn rest_writer(base: &str, w: &mut Writer, stop: &AtomicBool) {
    let c = http_client();
    let points = format!("{base}/api/v1/collections/{COLLECTION}/points");
    while !stop.load(Ordering::Relaxed) {
        let (id, version) = w.pick();
        let roll = w.rng.next_u64() % 10;
        let before = w.current(&id);
        let (next, res) = if roll < 6 {
            let meta = json!({"v": version});
            let body = json!({"points": [{"id": id, "vector": vector(version), "metadata": meta}]});
            let next = State::Present { version, meta };
            (next, c.put(&points).json(&body).send())
        } else if roll < 8 {
            let patch = json!({"p": version});
            let next = after_patch(&before, &patch);
            let url = format!("{points}/{id}");
            (next, c.patch(url).json(&json!({"metadata": patch})).send())
        } else {
            let url = format!("{points}/{id}");
            (State::Absent, c.delete(url).send())
        };
        if !w.settle(&id, next, classify(res)) {
            return;
        }
    }
}

async fn ws_writer(base: &str, w: &mut Writer, stop: &AtomicBool) {
    let url = format!("{}/api/v1/ws", base.replacen("http://", "ws://", 1));
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
        return;
    };
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let (id, version) = w.pick();
        n += 1;
        let (next, frame) = if w.rng.next_u64() % 10 < 7 {
            let meta = json!({"v": version});
            let frame = json!({"type": "insert", "id": n, "collection": COLLECTION,
                "points": [{"id": id, "vector": vector(version), "metadata": meta}]});
            (State::Present { version, meta }, frame)
        } else {
            let frame = json!({"type": "delete", "id": n, "collection": COLLECTION, "ids": [id]});
            (State::Absent, frame)
        };
        if ws.send(Message::text(frame.to_string())).await.is_err() {
            w.settle(&id, next, Outcome::Unknown);
            return;
        }
        let outcome = loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                    if v["id"] != json!(n) {
                        continue;
                    }
                    break match v["type"].as_str() {
                        Some("ack") => Outcome::Acked,
                        _ => Outcome::Refused(
                            v["retry_after_ms"].as_u64().map(Duration::from_millis),
                        ),
                    };
                }
                Some(Ok(_)) => continue,
                _ => break Outcome::Unknown,
            }
        };
        if !w.settle(&id, next, outcome) {
            return;
        }
    }
}

/// What the server holds for `id` now.
fn observe(c: &reqwest::blocking::Client, base: &str, id: &str) -> Result<State, String> {
    let url = format!("{base}/api/v1/collections/{COLLECTION}/points/{id}");
    let r = c.get(url).send().map_err(|e| e.to_string())?;
    if r.status() == 404 {
        return Ok(State::Absent);
    }
    let v: Value = r.json().map_err(|e| e.to_string())?;
    let version = v["vector"][0].as_f64().ok_or("point without vector")? as u64;
    let meta = v.get("metadata").cloned().unwrap_or(json!({}));
    Ok(State::Present { version, meta })
}

/// Checks every id after a restart; the observed state becomes the new baseline.
fn verify(base: &str, writers: &mut [Writer], losses: &mut Vec<String>) -> Result<u64, String> {
    let c = http_client();
    let mut lost = 0;
    for w in writers.iter_mut() {
        for id in w.ids.clone() {
            let seen = observe(&c, base, &id)?;
            let e = w.expect.entry(id.clone()).or_insert(Expect {
                acked: State::Absent,
                uncertain: None,
            });
            let ok = seen == e.acked || e.uncertain.as_ref() == Some(&seen);
            if !ok {
                lost += 1;
                if losses.len() < 20 {
                    losses.push(format!(
                        "{id}: expected {:?} (or {:?}), found {seen:?}",
                        e.acked, e.uncertain
                    ));
                }
            }
            e.acked = seen;
            e.uncertain = None;
        }
    }
    Ok(lost)
}

/// Runs the benchmark.
pub fn crash(a: &CrashArgs) -> Result<CrashReport, String> {
    let bin = server_bin(a)?;
    let data = match &a.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("ruvector-crash-{}", std::process::id())),
    };
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    let env: Vec<(String, String)> = a
        .server_env
        .iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect();
    let mut rng = Rng::new(a.seed);
    let mut writers: Vec<Writer> = (0..a.rest_writers + a.ws_writers)
        .map(|i| Writer {
            ids: (0..a.ids_per_writer).map(|j| format!("w{i}-{j}")).collect(),
            expect: HashMap::new(),
            rng: Rng::new(a.seed * 1000 + i as u64),
            next_version: 0,
            acked: 0,
            refused: 0,
        })
        .collect();
    let mut report = CrashReport {
        cycles: a.cycles,
        ..Default::default()
    };
    let rt = crate::streams::runtime().map_err(|e| e.to_string())?;
    for cycle in 0..a.cycles {
        let mut server = start(&bin, &data, &env, cycle)?;
        let base = server.base.clone();
        let lost = if cycle == 0 {
            http_client()
                .put(format!("{base}/api/v1/collections/{COLLECTION}"))
                .json(&json!({"dimension": DIM, "metric": "l2", "shards": 2}))
                .send()
                .map_err(|e| e.to_string())?;
            0
        } else {
            verify(&base, &mut writers, &mut report.losses)?
        };
        let before: (u64, u64) = writers
            .iter()
            .fold((0, 0), |s, w| (s.0 + w.acked, s.1 + w.refused));
        let stop = Arc::new(AtomicBool::new(false));
        let run_ms =
            a.min_run_ms + rng.next_u64() % (a.max_run_ms.saturating_sub(a.min_run_ms) + 1);
        let rest_count = a.rest_writers;
        std::thread::scope(|s| {
            let mut handles = Vec::new();
            for (i, w) in writers.iter_mut().enumerate() {
                let (base, stop, rt) = (base.clone(), stop.clone(), &rt);
                handles.push(s.spawn(move || {
                    if i < rest_count {
                        rest_writer(&base, w, &stop);
                    } else {
                        rt.block_on(ws_writer(&base, w, &stop));
                    }
                }));
            }
            std::thread::sleep(Duration::from_millis(run_ms));
            let _ = server.child.kill();
            let _ = server.child.wait();
            stop.store(true, Ordering::Relaxed);
        });
        let after: (u64, u64) = writers
            .iter()
            .fold((0, 0), |s, w| (s.0 + w.acked, s.1 + w.refused));
        let in_flight = writers
            .iter()
            .flat_map(|w| w.expect.values())
            .filter(|e| e.uncertain.is_some())
            .count() as u64;
        report.per_cycle.push(CycleReport {
            cycle,
            restart_ms: server.started.as_millis() as u64,
            acknowledged: after.0 - before.0,
            refused: after.1 - before.1,
            in_flight_at_kill: in_flight,
            lost,
            points: 0,
        });
        eprintln!(
            "cycle {cycle}: start {} ms, {} acknowledged, {} refused, killed after {run_ms} ms, {lost} lost at this start",
            server.started.as_millis(),
            after.0 - before.0,
            after.1 - before.1
        );
    }
    // A last start checks the last cycle's writes.
    let mut server = start(&bin, &data, &env, a.cycles)?;
    let lost = verify(&server.base, &mut writers, &mut report.losses)?;
    if let Some(last) = report.per_cycle.last_mut() {
        last.lost += lost;
    }
    let points = writers
        .iter()
        .flat_map(|w| w.expect.values())
        .filter(|e| e.acked != State::Absent)
        .count() as u64;
    if let Some(last) = report.per_cycle.last_mut() {
        last.points = points;
    }
    let _ = server.child.kill();
    let _ = server.child.wait();
    // The first start loaded an empty directory: restart times are those of later starts.
    let mut restarts: Vec<u64> = report
        .per_cycle
        .iter()
        .skip(1)
        .map(|c| c.restart_ms)
        .collect();
    restarts.push(server.started.as_millis() as u64);
    restarts.sort_unstable();
    report.restart_ms_p50 = restarts[restarts.len() / 2];
    report.restart_ms_max = restarts.last().copied().unwrap_or(0);
    report.acknowledged = report.per_cycle.iter().map(|c| c.acknowledged).sum();
    report.refused = report.per_cycle.iter().map(|c| c.refused).sum();
    report.lost = report.per_cycle.iter().map(|c| c.lost).sum();
    if a.data_dir.is_none() {
        let _ = std::fs::remove_dir_all(&data);
    }
    Ok(report)
}
