//! The HTTP face of `ApiError`: its status and JSON body as an actix-web response, with
//! `Retry-After` on 429 and 503. The contract itself (codes, statuses, retry hints) is
//! `crate::error`'s.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use ruvector_actors::EngineError;

use crate::error::ApiError;

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if let Some(ms) = self.retry_after_ms() {
            res.insert_header(("Retry-After", ms.div_ceil(1000).to_string()));
        }
        if let ApiError::Engine(EngineError::Internal(msg)) = self {
            tracing::error!(error = %msg, "internal error answered with 500");
        }
        res.json(self.body())
    }
}
