//! # ruvector-actors
//!
//! The actors of ruvector-streaming and the engine they own.
//!
//! ## Layout
//! - `types`, `error`: ids, metrics, points, collection specs; the one engine error type.
//! - `index`: SIMD distances (`distance`), metadata filters (`filter`), an HNSW partition with
//!   tombstones (`hnsw`).
//! - `storage`: per-shard write-ahead log with group commit (`wal`, `record`) and snapshots.
//! - `shard`: `ShardActor`, owning one partition and its log through a dedicated writer thread.
//! - `hub`: the change hub: per-collection sequence numbers, the replay window and indexed
//!   standing queries (subscriptions) that every applied write is matched against.
//! - `router`: `Router` actor (collections -> shards, fan-out, top-k merge) and the bounded
//!   `SearchPool` every search runs on.
//!
//! ## Message flow
//! write: HTTP -> `Router` -> `ShardActor` -> writer thread (log append, fsync per batch, apply,
//! ack). search: HTTP -> `Router` (`Lookup`: the collection's routing table) -> every
//! `ShardActor` -> `SearchPool` job -> merged top-k.

pub mod config;
pub mod error;
pub mod hub;
pub mod index;
pub mod pool;
pub mod router;
pub mod shard;
pub mod storage;
pub mod types;

pub use error::{EngineError, Overload, Result};
