//! The disk side of creating a collection, run off the router's thread: the collection is
//! assembled under `.new-<name>` (definition and every shard directory) and renamed into place,
//! then its shards are opened; and the crash-safe delete (rename to `.trash-…`, then remove).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{open_collection, rand_u64, write_spec};
use crate::config::EngineConfig;
use crate::error::Result;
use crate::hub::Hub;
use crate::pool::SearchPool;
use crate::shard::{shard_dir, OpenedShard};
use crate::storage::wal::sync_dir;
use crate::types::CollectionSpec;

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
