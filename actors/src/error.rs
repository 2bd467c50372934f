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
    /// Shedding: a full queue, a full pool, or the server is still loading.
    #[error("{0}")]
    Overloaded(String),
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

impl From<std::io::Error> for EngineError {
    fn from(e: std::io::Error) -> Self {
        EngineError::Internal(format!("i/o: {e}"))
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
