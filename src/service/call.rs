//! Calls into the engine under the request deadline (`server.request_timeout_ms`), with the
//! engine's and the mailbox's errors mapped to `ApiError`.

use std::future::Future;
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::{Handler, Message};
use ruvector_actors::EngineError;
use ruvector_actors::{Collection, Lookup, Router};
use std::sync::Arc;

use crate::error::ApiError;
use crate::state::AppState;

/// Sends a message to the router under the request deadline.
pub async fn ask<M>(state: &AppState, msg: M) -> Result<M::Result, ApiError>
where
    M: Message + Send + 'static,
    M::Result: Send,
    Router: Handler<M>,
    <Router as actix::Actor>::Context: ToEnvelope<Router, M>,
{
    deadline(state, async {
        state
            .router
            .send(msg)
            .await
            .map_err(|e| ApiError::from(EngineError::from(e)))
    })
    .await
}

/// The collection of that (internal) name: from the shared catalogue when installed, else from
/// the router, which knows why not (loading, held back, being created, unknown).
pub async fn lookup(state: &AppState, name: String) -> Result<Arc<Collection>, ApiError> {
    if let Some(c) = state.catalogue.get(&name) {
        return Ok(c);
    }
    Ok(ask(state, Lookup(name)).await??)
}

/// Runs `f` under the request deadline: `timeout` when it passes.
pub async fn deadline<T>(
    state: &AppState,
    f: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let ms = state.settings.server.request_timeout_ms;
    tokio::time::timeout(Duration::from_millis(ms), f)
        .await
        .map_err(|_| ApiError::from(EngineError::Timeout(ms)))?
}

/// Milliseconds since `t`, to the microsecond (the answers' `took_ms`).
pub fn took_ms(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e6).round() / 1e3
}
