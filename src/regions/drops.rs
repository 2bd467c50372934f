//! Collection deletes between regions. A collection delete is not a shard write (its files go),
//! so it has no place in the shard logs the publisher tails; it gets its own small durable
//! record instead, `<data_dir>/regions/drops.json` (written aside, synced, renamed):
//!
//! - `dropped`: collection → the delete's origin time (ns). A collection delete is a tombstone
//!   for the whole collection: any replicated change of that collection older than it is
//!   superseded (dropped before it is applied, and never re-creates the collection), while a
//!   write made after it (anywhere) re-creates the collection — last-write-wins, as for points.
//!   Kept `regions.tombstone_retention_s`.
//! - `outbox`: local deletes not yet appended to the region's change stream (the publisher
//!   sends them and removes them; a crash in between sends one twice, which changes nothing).
//!
//! A region that receives a delete applies it as a replicated delete of every point of the
//! collection stamped with the delete's version (so points written after it, elsewhere, stay)
//! and drops the collection when nothing stays (`link.rs`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use ruvector_actors::version::PointVersion;
use serde::{Deserialize, Serialize};

/// A local collection delete waiting to be published.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DropRecord {
    pub collection: String,
    pub dimension: usize,
    pub metric: String,
    /// `PointVersion::to_json` of the delete.
    pub version: serde_json::Value,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    dropped: BTreeMap<String, u64>,
    outbox: Vec<DropRecord>,
}

pub struct Drops {
    file: PathBuf,
    state: Mutex<State>,
    region: Arc<str>,
    instance: Arc<str>,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Drops {
    /// Loads `<data_dir>/regions/drops.json` (a damaged file is an error, never skipped).
    pub fn open(data_dir: &Path, region: &str, instance: &str) -> std::io::Result<Arc<Drops>> {
        let dir = data_dir.join("regions");
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("drops.json");
        let state = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::other(format!("{}: damaged: {e}", file.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e),
        };
        Ok(Arc::new(Drops {
            file,
            state: Mutex::new(state),
            region: Arc::from(region),
            instance: Arc::from(instance),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding it leaves the state as last saved or newer: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, state: &State) -> std::io::Result<()> {
        let tmp = self.file.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(state).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.file)?;
        if let Some(dir) = self.file.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// The origin time of the last delete of `collection` still remembered.
    pub fn dropped_at(&self, collection: &str) -> Option<u64> {
        self.lock().dropped.get(collection).copied()
    }

    /// A local delete of `collection`, made durable before the collection goes: remembered
    /// and queued for the region's change stream.
    pub fn record_local(
        &self,
        collection: &str,
        dimension: usize,
        metric: &str,
    ) -> std::io::Result<DropRecord> {
        let version = PointVersion::local(None, now_ns(), &self.region, &self.instance);
        let record = DropRecord {
            collection: collection.to_owned(),
            dimension,
            metric: metric.to_owned(),
            version: version.to_json(),
        };
        let mut state = self.lock();
        let at = state.dropped.entry(collection.to_owned()).or_insert(0);
        *at = (*at).max(version.ts);
        state.outbox.push(record.clone());
        self.save(&state)?;
        Ok(record)
    }

    /// Takes back a local delete that did not happen (the collection could not be dropped).
    pub fn withdraw(&self, record: &DropRecord) -> std::io::Result<()> {
        let mut state = self.lock();
        state.outbox.retain(|r| r != record);
        self.save(&state)
    }

    /// A delete of `collection` made elsewhere at `ts`.
    pub fn record_remote(&self, collection: &str, ts: u64) -> std::io::Result<()> {
        let mut state = self.lock();
        let at = state.dropped.entry(collection.to_owned()).or_insert(0);
        if *at >= ts {
            return Ok(());
        }
        *at = ts;
        self.save(&state)
    }

    /// The local deletes waiting to be published, oldest first.
    pub fn pending(&self) -> Vec<DropRecord> {
        self.lock().outbox.clone()
    }

    /// The first `n` pending deletes were published; forgets them, and deletes older than
    /// `retention_ns`.
    pub fn published(&self, n: usize, retention_ns: u64) -> std::io::Result<()> {
        let mut state = self.lock();
        let n = n.min(state.outbox.len());
        state.outbox.drain(..n);
        let cutoff = now_ns().saturating_sub(retention_ns);
        state.dropped.retain(|_, at| *at >= cutoff);
        self.save(&state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletes_survive_a_reopen_and_only_a_newer_remote_delete_moves_the_time() {
        let dir = tempfile::tempdir().unwrap();
        let d = Drops::open(dir.path(), "us", "i1").unwrap();
        let r = d.record_local("c", 4, "cosine").unwrap();
        let at = d.dropped_at("c").unwrap();
        d.record_remote("c", at - 1).unwrap();
        assert_eq!(
            d.dropped_at("c"),
            Some(at),
            "an older delete changes nothing"
        );
        d.record_remote("other", 5).unwrap();
        drop(d);
        let d = Drops::open(dir.path(), "us", "i1").unwrap();
        assert_eq!(d.pending(), vec![r.clone()]);
        assert_eq!(d.dropped_at("other"), Some(5));
        d.published(1, u64::MAX).unwrap();
        assert!(d.pending().is_empty());
        assert_eq!(d.dropped_at("c"), Some(at));
        std::fs::write(dir.path().join("regions/drops.json"), b"{broken").unwrap();
        assert!(
            Drops::open(dir.path(), "us", "i1").is_err(),
            "damage is an error"
        );
    }
}
