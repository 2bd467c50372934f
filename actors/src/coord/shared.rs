//! The contract between a coordinator and the region's shared coordination state: when several
//! instances serve one region they share agents, tasks, topics and memory through the region's
//! Redis (the server implements `SharedCoord`; the engine stays free of Redis). Without it
//! (`None`) a coordinator is the only writer of its tenant's state, as before.
//!
//! Redis is authoritative: every change is proposed to it first and applied locally only once
//! accepted. A task change carries the version it was planned on (`Expect::Version`): a claim
//! is exclusive across instances because of that compare-and-set, not because of one actor.
//! Memory writes and topic messages are ordered by Redis (a version per key, a sequence per
//! topic). Each accepted change is also appended to the region's coordination stream; the
//! other instances apply it (`ApplyShared`) to their copy, newer versions only, and tell their
//! own subscribers. A coordinator (re)loads its copy from Redis when it starts and whenever the
//! stream may have gaps (`Reload`).

use actix::prelude::*;
use futures_util::future::BoxFuture;

use super::agents::Agent;
use super::memory::MemoryEntry;
use super::store::Change;
use super::tasks::Task;
use super::topics::TopicMessage;
use crate::error::Result;

/// A position in the region's coordination stream (a Redis stream id: ms, sequence).
pub type StreamPos = (u64, u64);

/// What a change requires of the shared state before it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Nothing: last writer (in Redis's order) wins.
    Any,
    /// The object's shared version is exactly this (0: it does not exist).
    Version(u64),
}

/// The answer to a proposal.
#[derive(Debug)]
pub enum Committed {
    /// Applied, in order: each change's new version and, for topic messages, its sequence.
    /// With `first_of`, only the change at `chosen` was applied (the vectors hold it alone).
    Done {
        versions: Vec<u64>,
        seqs: Vec<Option<u64>>,
        chosen: Option<usize>,
    },
    /// An expectation failed (nothing applied; with `first_of`, every one failed): the objects
    /// as they are now, for the coordinator to adopt before it plans again.
    Stale(Vec<Current>),
}

/// An object as the shared state holds it: `change` (`None`: gone) at `version`.
#[derive(Debug)]
pub struct Current {
    pub key: String,
    pub change: Option<Change>,
    pub version: u64,
}

/// A tenant's shared state, read atomically with the stream position it is current at.
#[derive(Debug, Default)]
pub struct Loaded {
    pub tasks: Vec<Task>,
    pub memory: Vec<MemoryEntry>,
    pub messages: Vec<TopicMessage>,
    pub agents: Vec<Agent>,
    pub position: StreamPos,
}

/// The region's shared coordination state (one per server; all tenants).
pub trait SharedCoord: Send + Sync {
    /// Applies `changes` atomically if every expectation holds — or, with `first_of`, only
    /// the first change whose expectation holds (alternatives, e.g. the candidates of a claim).
    fn commit(
        &self,
        tenant: &str,
        changes: Vec<Change>,
        expect: Vec<Expect>,
        first_of: bool,
    ) -> BoxFuture<'static, Result<Committed>>;
    fn load(&self, tenant: &str) -> BoxFuture<'static, Result<Loaded>>;
    /// One object as the shared state holds it now (`t/<task>`, `m/<namespace>/<key>`).
    fn fetch(&self, tenant: &str, key: &str) -> BoxFuture<'static, Result<Current>>;
    /// Registers (or re-registers) an agent, online now.
    fn register(&self, tenant: &str, agent: &Agent) -> BoxFuture<'static, Result<()>>;
    /// `false`: the agent is not online in the region (it must register).
    fn heartbeat(&self, tenant: &str, agent: &str, now: u64) -> BoxFuture<'static, Result<bool>>;
    /// Takes agents silent for longer than `timeout_ms` offline. Each is returned to exactly
    /// one caller in the region, which then releases its tasks.
    fn reap(
        &self,
        tenant: &str,
        now: u64,
        timeout_ms: u64,
    ) -> BoxFuture<'static, Result<Vec<String>>>;
}

/// A change another instance made, as read from the region's coordination stream.
#[derive(Debug, Clone)]
pub enum SharedEvent {
    /// A task, memory or topic change (versions and sequences set).
    Change(Change),
    /// An agent registered.
    Joined(Agent),
    /// An agent went offline (reaped).
    Left(String),
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct ApplyShared {
    pub position: StreamPos,
    pub event: SharedEvent,
}

/// The stream may have lost entries (Redis was unreachable, or restarted empty): load again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reload;
