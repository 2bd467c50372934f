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
//! - `router`: `Router` actor (collections -> shards, fan-out, top-k merge), a collection's disk
//!   layout (`disk`) and offline repair (`repair`).
//! - `coord`: agent coordination — per tenant a `Coordinator` actor with agents, tasks, topics
//!   and memory, durable on the same log and snapshots.
//! - `pool`: the bounded `SearchPool` every search runs on, and the queueing-delay signal.
//!
//! What the server needs is re-exported at the crate root, so it never names module paths inside
//! the engine.
//!
//! ## Message flow
//! write: HTTP -> `Router` -> `ShardActor` -> writer thread (log append, fsync per batch, apply,
//! ack). search: HTTP -> `Catalogue` (the collection's routing table, written by the `Router`) ->
//! each shard searched on the caller's thread (small unfiltered searches) or every `ShardActor`
//! -> `SearchPool` job -> merged top-k.

pub mod config;
pub mod coord;
pub mod error;
pub mod hub;
pub mod index;
pub mod pool;
pub mod router;
pub mod shard;
pub mod storage;
pub mod types;
pub mod version;

pub use error::{EngineError, Overload, Result};

// The engine's public face: what the server uses, without reaching into module paths.
pub use config::{CoordConfig, EngineConfig, IndexConfig, StorageConfig};
pub use coord::agents::{Agent, AgentStatus};
pub use coord::memory::MemoryEntry;
pub use coord::store::Change as CoordChange;
pub use coord::tasks::Task;
pub use coord::topics::TopicMessage;
pub use coord::{
    ApplyShared, Call, Committed, CoordOp, CoordSink, Coordinator, Coordinators, Current, Expect,
    FedJoin, FedPull, FedPush, Loaded, Reload, Reply, SharedCoord, SharedEvent, StreamPos,
    SubscribeTopic, Unsubscribe, VectorClock,
};
pub use hub::{Delivery, Hub, ResetNeeded, Sink, StandingQuery};
pub use index::filter::Filter;
pub use pool::SearchPool;
pub use router::repair::repair_collection;
pub use router::{
    Catalogue, Collection, CollectionInfo, CollectionOptions, CreateCollection, DropCollection,
    ListCollections, LoadAll, Lookup, Ranked, RouteWrite, Router, SearchRequest, StopAll,
};
pub use shard::{ReplicatedChange, WriteOp};
pub use types::{
    validate_collection_name, validate_vector, Hit, Metadata, Metric, Point, Quantization,
};
