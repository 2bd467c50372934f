//! Request bodies: read with a size limit, parsed with serde_json, every failure a clear
//! `invalid_argument` or `payload_too_large` (never actix's plain-text defaults).

use actix_web::web;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::error::ApiError;

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

/// Reads and parses a JSON body.
pub async fn read_json<T: DeserializeOwned>(
    payload: web::Payload,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = read_body(payload, limit).await?;
    parse_json(&bytes)
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "request body is empty: a JSON object is required",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid(format!("malformed request: {e}")))
}
