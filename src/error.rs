//! `ApiError`: the one error every transport answers with, and its contract (PROTOCOL.md
//! §Errors): the `code` string, the HTTP status and the retry hint. Transports only render it:
//! `http::error` as a JSON response, the stream layer as an `error` frame, an SSE event or a raw
//! HTTP refusal. Every mapping is an exhaustive match, so a new variant cannot silently become
//! a 500.

use ruvector_actors::EngineError;

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

    /// The HTTP status of this error (PROTOCOL.md's table).
    pub fn status(&self) -> u16 {
        match self {
            ApiError::PayloadTooLarge(_) | ApiError::AnswerTooLarge(_) => 413,
            ApiError::BodyTimeout(_) => 408,
            ApiError::Unauthenticated(_) => 401,
            ApiError::PermissionDenied(_) => 403,
            ApiError::RateLimited { .. } => 429,
            ApiError::Engine(e) => match e {
                EngineError::InvalidArgument(_) | EngineError::DimensionMismatch { .. } => 400,
                EngineError::NotFound(_) => 404,
                EngineError::AlreadyExists(_) | EngineError::Conflict(_) => 409,
                EngineError::Overloaded(_) | EngineError::Unavailable(_) => 503,
                EngineError::Timeout(_) => 504,
                EngineError::Internal(_) => 500,
            },
        }
    }

    /// How long the client should wait before retrying, when waiting is the answer.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            ApiError::Engine(e) => match e {
                EngineError::Overloaded(_) => Some(OVERLOADED_RETRY_MS),
                // Held back until an operator repairs it: retrying soon will not help.
                EngineError::Unavailable(_) => Some(UNAVAILABLE_RETRY_MS),
                EngineError::InvalidArgument(_)
                | EngineError::DimensionMismatch { .. }
                | EngineError::NotFound(_)
                | EngineError::AlreadyExists(_)
                | EngineError::Conflict(_)
                | EngineError::Timeout(_)
                | EngineError::Internal(_) => None,
            },
            ApiError::RateLimited { retry_ms, .. } => Some(*retry_ms),
            ApiError::PayloadTooLarge(_)
            | ApiError::BodyTimeout(_)
            | ApiError::AnswerTooLarge(_)
            | ApiError::Unauthenticated(_)
            | ApiError::PermissionDenied(_) => None,
        }
    }

    /// The JSON body every transport sends: `{"error":{"code","message"}}` plus
    /// `retry_after_ms` when there is one.
    pub fn body(&self) -> serde_json::Value {
        let mut body =
            serde_json::json!({"error": {"code": self.code(), "message": self.to_string()}});
        if let Some(ms) = self.retry_after_ms() {
            body["retry_after_ms"] = ms.into();
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruvector_actors::Overload;

    #[test]
    fn overload_and_rate_limits_carry_a_retry_hint_and_client_errors_do_not() {
        let e = ApiError::from(EngineError::Overloaded(Overload::Draining));
        assert_eq!((e.status(), e.code()), (503, "overloaded"));
        assert_eq!(e.body()["retry_after_ms"], 1000);
        let e = ApiError::RateLimited {
            class: "read",
            retry_ms: 250,
        };
        assert_eq!((e.status(), e.retry_after_ms()), (429, Some(250)));
        let e = ApiError::invalid("x");
        assert_eq!((e.status(), e.retry_after_ms()), (400, None));
        assert!(e.body().get("retry_after_ms").is_none());
    }
}
