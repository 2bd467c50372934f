//! Agent coordination (PROTOCOL.md §Agent coordination): agents (soft state), tasks with
//! exclusive claims, topics with a bounded history, and shared memory with TTLs — per tenant, in
//! one `Coordinator` actor each, durable on the engine's write-ahead log and snapshots.
//!
//! - `ops`: the requests and replies; `actor`: the coordinator; `registry`: one per tenant.
//! - `tasks`, `agents`, `topics`, `memory`: the state, pure and tested on its own.
//! - `memory_requests`: the memory requests; `vectors`: memory embeddings in the tenant's
//!   memory collection of the vector index.
//! - `store`: the state on disk (log records and snapshots); `durable`: group commit (what
//!   waits for the log's sync).
//! - `federation`: agentic-flow's `FederationHubClient` protocol on the same state.
//!
//! - `share`: how requests change state (planned, then committed locally or proposed to the
//!   region's shared state first); `shared`: the contract of that shared state (Redis, in the
//!   server), for several instances of one region; `membership`: registrations and heartbeats;
//!   `sweep`: silent agents and expired memory; `task_requests`: the requests that change
//!   tasks and topics.
//!
//! Coordination is regional: it is not replicated between regions (a claim must stay
//! exclusive, which active-active replication cannot promise); within a region it is shared.

pub mod actor;
pub mod agents;
mod durable;
pub mod federation;
mod membership;
pub mod memory;
pub mod memory_requests;
pub mod ops;
pub mod registry;
mod share;
pub mod shared;
pub mod store;
mod sweep;
mod task_requests;
pub mod tasks;
pub mod topics;
pub mod vectors;

pub use actor::{Call, CoordSink, Coordinator, SubscribeTopic, Unsubscribe};
pub use federation::{FedJoin, FedPull, FedPush, VectorClock};
pub use ops::{CoordOp, Reply};
pub use registry::Coordinators;
pub use shared::{
    ApplyShared, Committed, Current, Expect, Loaded, Reload, SharedCoord, SharedEvent, StreamPos,
};
