//! A tenant's coordination state on disk, on the engine's own storage layer: every change is a
//! record of the shards' write-ahead log (`storage::wal`: checksummed, numbered, damage told
//! apart on replay) — an upsert of the object's JSON under `t/<task>`, `p/<topic>/<seq>` or
//! `m/<namespace>/<key>`, or a delete — and the whole state is written now and then as one JSON
//! snapshot (`state.json`, written aside, synced, renamed), after which older log segments go.
//! Loading reads the snapshot, then replays the log after it. No second storage engine: the
//! state is small, held in memory, and needs nothing a log and a snapshot do not give.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::memory::{Memory, MemoryEntry};
use super::tasks::{Task, Tasks};
use super::topics::{TopicMessage, Topics};
use crate::error::EngineError;
use crate::index::hnsw::Op;
use crate::storage::wal::{self, ReplayMode, WriteLog};
use crate::storage::FsyncMode;

const SNAPSHOT: &str = "state.json";

/// One durable change.
#[derive(Debug, Clone)]
pub enum Change {
    Task(Task),
    Message(TopicMessage),
    Memory(MemoryEntry),
    /// `version`: its version in the region's shared state (0 when coordination is local);
    /// not logged (a reload from the region's Redis brings it back).
    Forget {
        namespace: String,
        key: String,
        version: u64,
    },
}

fn object(v: Value) -> Result<Arc<serde_json::Map<String, Value>>, EngineError> {
    match v {
        Value::Object(m) => Ok(Arc::new(m)),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Array(_) => {
            Err(EngineError::Internal("a record must be an object".into()))
        }
    }
}

impl Change {
    fn to_op(&self) -> Result<Op, EngineError> {
        let (id, value) = match self {
            Change::Task(t) => (format!("t/{}", t.task_id), to_json(t)),
            Change::Message(m) => (format!("p/{}/{}", m.topic, m.seq), to_json(m)),
            Change::Memory(e) => (format!("m/{}/{}", e.namespace, e.key), to_json(e)),
            Change::Forget { namespace, key, .. } => {
                return Ok(Op::Delete {
                    id: format!("m/{namespace}/{key}"),
                })
            }
        };
        Ok(Op::Upsert {
            id,
            vector: Vec::new(),
            metadata: Some(object(value?)?),
        })
    }

    fn from_op(op: Op) -> Result<Change, String> {
        let parse = |m: Option<Arc<serde_json::Map<String, Value>>>| {
            Value::Object(m.map(|m| (*m).clone()).unwrap_or_default())
        };
        match op {
            Op::Upsert { id, metadata, .. } | Op::SetMetadata { id, metadata } => {
                let v = parse(metadata);
                let bad = |e: serde_json::Error| format!("record {id}: {e}");
                match id.split_once('/') {
                    Some(("t", _)) => Ok(Change::Task(serde_json::from_value(v).map_err(bad)?)),
                    Some(("p", _)) => Ok(Change::Message(serde_json::from_value(v).map_err(bad)?)),
                    Some(("m", _)) => Ok(Change::Memory(serde_json::from_value(v).map_err(bad)?)),
                    _ => Err(format!("unknown record {id:?}")),
                }
            }
            Op::Delete { id } => {
                let rest = id
                    .strip_prefix("m/")
                    .ok_or(format!("unknown delete {id:?}"))?;
                let (namespace, key) = rest.split_once('/').ok_or(format!("bad delete {id:?}"))?;
                Ok(Change::Forget {
                    namespace: namespace.into(),
                    key: key.into(),
                    version: 0,
                })
            }
        }
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<Value, EngineError> {
    serde_json::to_value(v).map_err(|e| EngineError::Internal(e.to_string()))
}

/// The state a tenant's coordinator holds.
#[derive(Default)]
pub struct State {
    pub tasks: Tasks,
    pub topics: Topics,
    pub memory: Memory,
}

impl State {
    pub fn apply(&mut self, c: Change, topic_history: usize) {
        match c {
            Change::Task(t) => self.tasks.put(t),
            Change::Message(m) => self.topics.put(m, topic_history),
            Change::Memory(e) => self.memory.put(e),
            Change::Forget { namespace, key, .. } => {
                self.memory.remove(&namespace, &key);
            }
        }
    }
}

#[derive(Serialize, Deserialize, Default)]
struct Snapshot {
    seq: u64,
    tasks: Vec<Task>,
    messages: Vec<TopicMessage>,
    memory: Vec<MemoryEntry>,
}

pub struct Store {
    dir: PathBuf,
    log: WriteLog,
    fsync: FsyncMode,
    seq: u64,
    since_snapshot: u64,
    /// Changes written but not yet synced (`fsync = "batch"`).
    unsynced: bool,
}

impl Store {
    /// Loads a tenant's state (snapshot, then the log after it) and opens its log.
    pub fn open(
        dir: &Path,
        fsync: FsyncMode,
        topic_history: usize,
    ) -> Result<(Store, State), EngineError> {
        let io = |e: std::io::Error| EngineError::Internal(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        let snap: Snapshot = match std::fs::read(dir.join(SNAPSHOT)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                EngineError::Internal(format!(
                    "{}: damaged snapshot: {e}",
                    dir.join(SNAPSHOT).display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Snapshot::default(),
            Err(e) => return Err(io(e)),
        };
        let mut state = State::default();
        let base = snap.seq;
        for t in snap.tasks {
            state.tasks.put(t);
        }
        for m in snap.messages {
            state.topics.put(m, topic_history);
        }
        for e in snap.memory {
            state.memory.put(e);
        }
        let mut bad = None;
        let report = wal::replay(
            dir,
            base,
            ReplayMode::Strict,
            |_, _, op, _| match Change::from_op(op) {
                Ok(c) => state.apply(c, topic_history),
                Err(e) => bad = Some(e),
            },
        )
        .map_err(io)?;
        if let Some(e) = bad {
            return Err(EngineError::Internal(format!("{}: {e}", dir.display())));
        }
        if let Some(h) = report.holes.first() {
            return Err(EngineError::Internal(format!("{}: {h}", dir.display())));
        }
        let log = WriteLog::create(dir, report.last_seq + 1).map_err(io)?;
        let store = Store {
            dir: dir.to_path_buf(),
            log,
            fsync,
            seq: report.last_seq,
            since_snapshot: report.records,
            unsynced: false,
        };
        Ok((store, state))
    }

    /// Writes `changes` to the log; nothing is applied by this call. With `fsync = "always"`
    /// they are durable when it returns, with `"batch"` once `sync` returns (group commit: the
    /// coordinator syncs once for all the requests it served in a row), with `"never"` the OS
    /// decides.
    pub fn commit(&mut self, changes: &[Change]) -> Result<(), EngineError> {
        if changes.is_empty() {
            return Ok(());
        }
        let ops: Vec<Op> = changes
            .iter()
            .map(Change::to_op)
            .collect::<Result<_, _>>()?;
        let first = self.seq + 1;
        let records = ops
            .iter()
            .enumerate()
            .map(|(i, op)| (first + i as u64, None, op));
        let io = |e: std::io::Error| EngineError::Internal(format!("coordination log: {e}"));
        self.log.append(records).map_err(io)?;
        self.seq += ops.len() as u64;
        self.since_snapshot += ops.len() as u64;
        match self.fsync {
            FsyncMode::Always => self.log.sync().map_err(io)?,
            FsyncMode::Batch => self.unsynced = true,
            FsyncMode::Never => self.log.commit_len(),
        }
        Ok(())
    }

    /// Whether changes wait for `sync`.
    pub fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// Makes every change written so far durable. On failure the log is cut back to the last
    /// sync (those changes are not on disk; the caller must drop its state and reload).
    pub fn sync(&mut self) -> Result<(), EngineError> {
        if !self.unsynced {
            return Ok(());
        }
        self.unsynced = false;
        self.log
            .sync()
            .map_err(|e| EngineError::Internal(format!("coordination log: {e}")))
    }

    pub fn since_snapshot(&self) -> u64 {
        self.since_snapshot
    }

    /// Writes the whole state as the new snapshot and drops the log it covers (after syncing
    /// the log: a snapshot never holds a change the log could still lose).
    pub fn snapshot(&mut self, state: &State) -> Result<(), EngineError> {
        self.sync()?;
        let snap = Snapshot {
            seq: self.seq,
            tasks: state.tasks.all().cloned().collect(),
            messages: state.topics.all().cloned().collect(),
            memory: state.memory.all().cloned().collect(),
        };
        let io = |e: std::io::Error| EngineError::Internal(format!("coordination snapshot: {e}"));
        let tmp = self.dir.join(format!("{SNAPSHOT}.tmp"));
        let bytes = serde_json::to_vec(&snap).map_err(|e| EngineError::Internal(e.to_string()))?;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, self.dir.join(SNAPSHOT)).map_err(io)?;
        wal::sync_dir(&self.dir).map_err(io)?;
        self.log
            .rotate_after_snapshot(self.seq, self.seq)
            .map_err(io)?;
        self.since_snapshot = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::tasks::TaskStatus;
    use serde_json::json;

    fn task(id: &str) -> Task {
        Task {
            task_id: id.into(),
            task_type: "t".into(),
            swarm: "default".into(),
            priority: 50,
            status: TaskStatus::Pending,
            task_data: json!({"n": 1}),
            embedding: Some(vec![1.0, 0.0]),
            required_capabilities: vec![],
            assigned_to: None,
            retries: 0,
            max_retries: 3,
            result: None,
            error: None,
            created_at: 1,
            updated_at: 1,
            queue_order: 7,
            version: 0,
        }
    }

    #[test]
    fn changes_survive_a_reopen_before_and_after_a_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut store, mut state) = Store::open(dir.path(), FsyncMode::Always, 10).expect("open");
        let entry = MemoryEntry {
            namespace: "ns".into(),
            key: "k".into(),
            value: json!("v"),
            rev: Some(3),
            created_at: 1,
            expires_at: None,
            version: 0,
        };
        let first = vec![Change::Task(task("a")), Change::Memory(entry.clone())];
        store.commit(&first).expect("commit");
        for c in first {
            state.apply(c, 10);
        }
        store.snapshot(&state).expect("snapshot");
        let later = vec![
            Change::Task(task("b")),
            Change::Forget {
                namespace: "ns".into(),
                key: "k".into(),
                version: 0,
            },
        ];
        store.commit(&later).expect("commit");
        drop(store);
        let (_, again) = Store::open(dir.path(), FsyncMode::Always, 10).expect("reopen");
        assert!(again.tasks.get("a").is_some() && again.tasks.get("b").is_some());
        assert_eq!(again.tasks.get("a").map(|t| t.queue_order), Some(7));
        assert!(
            again.memory.get("ns", "k", 2).is_none(),
            "the delete after the snapshot holds"
        );
    }
}
