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
//! Coordination is regional: it is not replicated between regions (a claim must stay
//! exclusive, which active-active replication cannot promise).

pub mod actor;
pub mod agents;
mod durable;
pub mod federation;
pub mod memory;
pub mod memory_requests;
pub mod ops;
pub mod registry;
pub mod store;
pub mod tasks;
pub mod topics;
pub mod vectors;

pub use actor::{Call, CoordSink, Coordinator, SubscribeTopic, Unsubscribe};
pub use federation::{FedJoin, FedPull, FedPush, VectorClock};
pub use ops::{CoordOp, Reply};
pub use registry::Coordinators;
