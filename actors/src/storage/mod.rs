//! Durability of a shard: a checksummed write-ahead log with group commit (`wal`) and periodic
//! snapshots of the whole partition, graph included (`snapshot`).
//!
//! A shard directory holds `wal-<first seq>.log` segments and `snapshot-<seq>/` directories. On
//! start the newest valid snapshot is loaded and the log records after its sequence number are
//! replayed; a torn or corrupt record ends replay of its segment, which is truncated there.

pub mod record;
pub mod snapshot;
pub mod tail;
pub mod wal;

use serde::Deserialize;

/// When the log is flushed to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// One fsync per write request: no batching.
    Always,
    /// Group commit: one fsync for every batch of writes that arrived together.
    Batch,
    /// Leave it to the OS: fast, and acknowledged writes can be lost on power failure
    /// (not on a process crash: the page cache survives `kill -9`).
    Never,
}
