//! Several regions on loopback for the replication tests: per region a `redis-server` and a
//! server whose config names the others as peers (with their HTTP address, for resyncs).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::redis_server::{free_port, RedisServer};
use super::{wait_for, Server};

pub struct Regions {
    pub names: Vec<String>,
    pub redis: Vec<RedisServer>,
    pub servers: Vec<Option<Server>>,
    ports: Vec<u16>,
    dirs: Vec<tempfile::TempDir>,
    starts: Vec<usize>,
}

impl Regions {
    /// `names.len()` regions, each with its own Redis (`appendonly`: whether it persists).
    pub fn start(names: &[&str], appendonly: bool) -> Regions {
        let mut r = Regions {
            names: names.iter().map(|n| n.to_string()).collect(),
            redis: names
                .iter()
                .map(|_| RedisServer::start(appendonly))
                .collect(),
            servers: names.iter().map(|_| None).collect(),
            ports: names.iter().map(|_| free_port()).collect(),
            dirs: names.iter().map(|_| tempfile::tempdir().unwrap()).collect(),
            starts: vec![0; names.len()],
        };
        for i in 0..names.len() {
            r.write_config(i);
        }
        for i in 0..names.len() {
            r.start_region(i);
        }
        r
    }

    fn config_path(&self, i: usize) -> PathBuf {
        self.dirs[i].path().join("config.toml")
    }

    fn write_config(&self, i: usize) {
        let mut text = format!(
            "[server]\nregion = \"{}\"\n[redis]\nurl = \"{}\"\n",
            self.names[i],
            self.redis[i].url()
        );
        for j in 0..self.names.len() {
            if j != i {
                text.push_str(&format!(
                    "[[regions.peers]]\nname = \"{}\"\nredis_url = \"{}\"\nhttp_url = \"http://127.0.0.1:{}\"\n",
                    self.names[j],
                    self.redis[j].url(),
                    self.ports[j]
                ));
            }
        }
        std::fs::write(self.config_path(i), text).unwrap();
    }

    /// Starts (or restarts) region `i` on its data directory and port.
    pub fn start_region(&mut self, i: usize) {
        let config = self.config_path(i);
        let port = self.ports[i].to_string();
        let env = [
            ("RUVECTOR_CONFIG", config.to_str().unwrap()),
            ("RUVECTOR__SERVER__PORT", port.as_str()),
        ];
        let s = Server::start_in(self.dirs[i].path(), &env, self.starts[i]);
        self.starts[i] += 1;
        self.servers[i] = Some(s);
    }

    pub fn server(&self, i: usize) -> &Server {
        self.servers[i].as_ref().expect("region running")
    }

    pub fn kill9(&mut self, i: usize) {
        if let Some(mut s) = self.servers[i].take() {
            s.kill9();
        }
    }

    /// Region `i` loses its data directory (a new instance with an empty disk); stop it first.
    pub fn wipe_data(&self, i: usize) {
        assert!(self.servers[i].is_none(), "stop region {i} first");
        let data = self.dirs[i].path().join("data");
        std::fs::remove_dir_all(&data).unwrap();
    }

    /// Every point of a collection in region `i`, page by page (id, vector, metadata,
    /// version), or `None` if the collection is missing there.
    pub fn dump(&self, i: usize, collection: &str) -> Option<Vec<Value>> {
        let s = self.server(i);
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/collections/{collection}/points?limit=256");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, page) = s.call("GET", &path, None);
            if status == 404 {
                return None;
            }
            assert_eq!(status, 200, "{page}");
            out.extend(page["points"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return Some(out),
            }
        }
    }

    /// Waits until every running region holds the same dump of `collection` with `expect`
    /// points (any count: `None`); answers it.
    pub fn converged(
        &self,
        collection: &str,
        expect: Option<usize>,
        limit: Duration,
    ) -> Vec<Value> {
        let running: Vec<usize> = (0..self.names.len())
            .filter(|i| self.servers[*i].is_some())
            .collect();
        let mut last = Vec::new();
        let ok = wait_for(limit, || {
            let dumps: Vec<Option<Vec<Value>>> =
                running.iter().map(|i| self.dump(*i, collection)).collect();
            let Some(first) = dumps[0].clone() else {
                return false;
            };
            last = dumps.clone();
            dumps.iter().all(|d| d.as_ref() == Some(&first))
                && expect.is_none_or(|n| first.len() == n)
        });
        if !ok {
            let sizes: Vec<Option<usize>> = last.iter().map(|d| d.as_ref().map(Vec::len)).collect();
            let logs: Vec<String> = running
                .iter()
                .map(|i| {
                    let log = self.server(*i).log_text();
                    let tail: String = log.lines().rev().take(15).collect::<Vec<_>>().join("\n");
                    format!("--- {} ---\n{tail}", self.names[*i])
                })
                .collect();
            panic!(
                "regions did not converge on {collection:?} within {limit:?}: sizes {sizes:?}\n{}",
                logs.join("\n")
            );
        }
        last.remove(0).unwrap()
    }
}

/// A point body.
pub fn point(id: &str, vector: Vec<f32>, tag: &str) -> Value {
    json!({"id": id, "vector": vector, "metadata": {"tag": tag}})
}
