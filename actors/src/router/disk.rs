//! A collection on disk: its layout (the definition file, one directory per shard), opening its
//! shards, creating it off the router's thread (assembled under `.new-<name>` — definition and
//! every shard directory — and renamed into place, then its shards opened) and the crash-safe
//! delete (rename to `.trash-…`, then remove).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::EngineConfig;
use crate::error::{EngineError, Result};
use crate::hub::Hub;
use crate::index::hnsw::PartitionSpec;
use crate::pool::SearchPool;
use crate::shard::{shard_dir, OpenedShard};
use crate::storage::wal::sync_dir;
use crate::types::CollectionSpec;

/// The definition file in a collection's directory.
pub(super) const SPEC_FILE: &str = "collection.json";

pub(super) fn collections_dir(cfg: &EngineConfig) -> PathBuf {
    cfg.storage.data_dir.join("collections")
}

pub(super) fn write_spec(dir: &Path, spec: &CollectionSpec) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{SPEC_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(spec).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(SPEC_FILE))?;
    sync_dir(dir)
}

/// Opens every shard of a collection (in parallel: each loads a snapshot and replays a log).
pub(super) fn open_collection(
    cfg: &EngineConfig,
    dir: &Path,
    spec: &CollectionSpec,
    pool: &Arc<SearchPool>,
    hub: &Arc<Hub>,
) -> Result<Vec<OpenedShard>> {
    let pspec = PartitionSpec {
        metric: spec.metric,
        dimension: spec.dimension,
        hnsw: spec.hnsw,
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..spec.shards)
            .map(|i| {
                let pool = pool.clone();
                let hub = hub.clone();
                s.spawn(move || {
                    OpenedShard::open(&shard_dir(dir, i), &spec.name, i, pspec, cfg, pool, hub)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| EngineError::Internal("shard loader panicked".into()))?
            })
            .collect()
    })
}

pub(super) fn rand_u64() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

/// Writes a new collection to disk and opens its shards.
pub(super) fn build(
    cfg: &EngineConfig,
    root: &Path,
    spec: &CollectionSpec,
    pool: &Arc<SearchPool>,
    hub: &Arc<Hub>,
) -> Result<(PathBuf, Vec<OpenedShard>)> {
    let name = &spec.name;
    let dir = root.join(name);
    if dir.exists() {
        // Not a collection we know (no definition was readable at start): out of the way.
        move_to_trash(root, &dir)?;
    }
    let staging = root.join(format!(".new-{name}"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging)?;
    // Every shard directory exists before the collection does: at load, a missing one is
    // damage, never a collection caught half-created.
    for i in 0..spec.shards {
        std::fs::create_dir_all(shard_dir(&staging, i))?;
    }
    write_spec(&staging, spec)?;
    std::fs::rename(&staging, &dir)?;
    sync_dir(root)?;
    let opened = open_collection(cfg, &dir, spec, pool, hub)?;
    Ok((dir, opened))
}

/// Deletes a collection directory crash-safely: renamed to a `.trash-` name first (and the
/// rename made durable), so a crash mid-delete leaves a name that the next start removes,
/// never half a collection under its own name.
pub(super) fn move_to_trash(root: &Path, dir: &Path) -> std::io::Result<()> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("x");
    let trash = root.join(format!(".trash-{name}-{:016x}", rand_u64()));
    std::fs::rename(dir, &trash)?;
    sync_dir(root)?;
    std::fs::remove_dir_all(&trash)
}
