//! The HTTP face of errors: `{"error":{"code","message"}}` with the contract's status, and
//! `Retry-After` plus `retry_after_ms` on 429 and 503. The status mapping is an exhaustive match
//! so a new error variant cannot silently become a 500.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use ruvector_actors::EngineError;
use serde_json::json;

/// How long a client should wait after `overloaded` before trying again.
const OVERLOADED_RETRY_MS: u64 = 1000;
/// How long a client should wait after `unavailable` (a collection held back for repair).
const UNAVAILABLE_RETRY_MS: u64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// The request body did not arrive within `server.body_timeout_ms`.
    #[error("the request body did not arrive within {0} ms")]
    BodyTimeout(u64),
    /// The answer a request asks for would be too large to build.
    #[error("{0}")]
    AnswerTooLarge(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("rate limit exceeded ({class}); retry in {retry_ms} ms")]
    RateLimited { class: &'static str, retry_ms: u64 },
}

impl ApiError {
    pub fn invalid(msg: impl Into<String>) -> ApiError {
        ApiError::Engine(EngineError::invalid(msg))
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Engine(e) => e.code(),
            ApiError::PayloadTooLarge(_) | ApiError::AnswerTooLarge(_) => "payload_too_large",
            ApiError::BodyTimeout(_) => "timeout",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::PermissionDenied(_) => "permission_denied",
            ApiError::RateLimited { .. } => "rate_limited",
        }
    }

    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            ApiError::Engine(EngineError::Overloaded(_)) => Some(OVERLOADED_RETRY_MS),
            // Held back until an operator repairs it: retrying soon will not help.
            ApiError::Engine(EngineError::Unavailable(_)) => Some(UNAVAILABLE_RETRY_MS),
            ApiError::RateLimited { retry_ms, .. } => Some(*retry_ms),
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::PayloadTooLarge(_) | ApiError::AnswerTooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Engine(e) => match e {
                EngineError::InvalidArgument(_) | EngineError::DimensionMismatch { .. } => {
                    StatusCode::BAD_REQUEST
                }
                EngineError::NotFound(_) => StatusCode::NOT_FOUND,
                EngineError::AlreadyExists(_) => StatusCode::CONFLICT,
                EngineError::Overloaded(_) | EngineError::Unavailable(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                EngineError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                EngineError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = json!({"error": {"code": self.code(), "message": self.to_string()}});
        let mut res = HttpResponse::build(self.status_code());
        if let Some(ms) = self.retry_after_ms() {
            body["retry_after_ms"] = json!(ms);
            res.insert_header(("Retry-After", ms.div_ceil(1000).to_string()));
        }
        if let ApiError::Engine(EngineError::Internal(msg)) = self {
            tracing::error!(error = %msg, "internal error answered with 500");
        }
        res.json(body)
    }
}
