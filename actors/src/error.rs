//! The engine's one error type. Each variant carries a stable code string (the wire contract's
//! `error.code`) that the HTTP layer maps to a status with an exhaustive match.

use thiserror::Error;

/// Everything the engine can refuse or fail with.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum EngineError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("vector has dimension {got}, collection expects {expected}")]
    DimensionMismatch { expected: usize, got: usize },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// A state clash: settling a task one does not hold, or twice.
    #[error("{0}")]
    Conflict(String),
    /// Shedding: a full queue, a full pool, the server loading or draining.
    #[error("{0}")]
    Overloaded(Overload),
    /// A collection held back after damage found at start (see the server log), or a shard
    /// that lost its writer.
    #[error("{0}")]
    Unavailable(String),
    #[error("request deadline of {0} ms passed")]
    Timeout(u64),
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// The contract's error code.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::InvalidArgument(_) => "invalid_argument",
            EngineError::DimensionMismatch { .. } => "dimension_mismatch",
            EngineError::NotFound(_) => "not_found",
            EngineError::AlreadyExists(_) => "already_exists",
            EngineError::Conflict(_) => "conflict",
            EngineError::Overloaded(_) => "overloaded",
            EngineError::Unavailable(_) => "unavailable",
            EngineError::Timeout(_) => "timeout",
            EngineError::Internal(_) => "internal",
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        EngineError::InvalidArgument(msg.into())
    }
}

/// Why work was refused for lack of capacity: callers (metrics, retry hints, close codes) branch
/// on the reason, so it is a type, not a sentence.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Overload {
    #[error("the server is still loading its data")]
    Loading,
    #[error("the server is draining")]
    Draining,
    #[error("search pool queue is full")]
    SearchPoolFull,
    #[error("shard write queue is full")]
    WriteQueueFull,
    #[error("shard is shutting down")]
    ShardStopping,
    #[error("search pool stopped")]
    Stopping,
    #[error("an actor is unavailable: {0}")]
    Mailbox(String),
    #[error("collection {0:?} is being deleted; retry shortly")]
    Deleting(String),
    #[error("collection {0:?} is being created; retry shortly")]
    Creating(String),
    #[error("shedding load: not accepting new streams")]
    RejectingStreams,
    #[error("shedding load")]
    Shedding,
    #[error("at most {0} open streams")]
    TooManyStreams(usize),
}

impl Overload {
    /// A stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Overload::Loading => "loading",
            Overload::Draining => "draining",
            Overload::SearchPoolFull => "search_pool",
            Overload::WriteQueueFull => "shard_write_queue",
            Overload::ShardStopping => "shard_stopping",
            Overload::Stopping => "stopping",
            Overload::Mailbox(_) => "mailbox",
            Overload::Deleting(_) => "deleting",
            Overload::Creating(_) => "creating",
            Overload::RejectingStreams => "rejecting_streams",
            Overload::Shedding => "shedding",
            Overload::TooManyStreams(_) => "max_streams",
        }
    }
}

impl From<actix::MailboxError> for EngineError {
    fn from(e: actix::MailboxError) -> Self {
        EngineError::Overloaded(Overload::Mailbox(e.to_string()))
    }
}

impl From<std::io::Error> for EngineError {
    fn from(e: std::io::Error) -> Self {
        EngineError::Internal(format!("i/o: {e}"))
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
