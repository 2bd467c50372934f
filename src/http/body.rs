//! Request bodies: read with a size limit and a time limit, parsed with serde_json, every
//! failure a clear `invalid_argument`, `payload_too_large` or 408 `timeout` (never actix's
//! plain-text defaults). A request counts as in flight (a shed signal) only once its body is
//! complete: a client trickling a body in is waiting on itself, not loading the server.

use actix_web::web;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use std::time::Duration;

use crate::error::ApiError;
use crate::state::AppState;
use crate::supervise::InFlight;

/// An oversized body is still read (and dropped) up to this many times the limit, so the client
/// gets to see our 413 instead of a reset connection; past it the connection is cut.
const DRAIN_FACTOR: usize = 8;

/// Reads the whole body, refusing more than `limit` bytes.
pub async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, ApiError> {
    let mut buf = web::BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::invalid(format!("reading the body failed: {e}")))?;
        seen += chunk.len();
        if seen > limit {
            if seen > limit.saturating_mul(DRAIN_FACTOR) {
                break;
            }
            buf.clear();
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if seen > limit {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    Ok(buf)
}

/// Reads and parses a JSON body within `server.max_body_bytes` and `server.body_timeout_ms`;
/// the request is counted in flight from then on (hold the guard until the answer is built).
pub async fn read_json<T: DeserializeOwned>(
    state: &AppState,
    payload: web::Payload,
) -> Result<(T, InFlight), ApiError> {
    let s = &state.settings.server;
    let ms = s.body_timeout_ms;
    let bytes = tokio::time::timeout(
        Duration::from_millis(ms),
        read_body(payload, s.max_body_bytes),
    )
    .await
    .map_err(|_| ApiError::BodyTimeout(ms))??;
    let busy = state.supervisor.begin();
    Ok((parse_json(&bytes)?, busy))
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "request body is empty: a JSON object is required",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid(format!("malformed request: {e}")))
}
