//! A new connection's first request line, peeked at (not consumed), decides who serves it:
//! `GET /api/v1/ws` goes to the WebSocket layer and `GET /api/v1/stream/subscribe|search` to the
//! lean SSE server, because actix-web's HTTP/1 dispatcher keeps 16 KB of buffers per connection
//! for its whole life, which would be most of an idle stream's memory. Everything else (and any
//! later request on a kept-alive connection) is actix-web's. The WebSocket upgrade is completed
//! here: head read within `server.client_request_timeout_ms`, credentials, admission, `101`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web;
use ruvector_actors::{EngineError, Overload};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::conn::{read_head, refuse, Head};
use super::http1;
use super::session::Session;
use super::sse;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::registry::Kind;
use crate::state::AppState;
use crate::supervise::Class;

/// Who serves a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    WebSocket,
    /// agentic-flow's federation protocol on a WebSocket.
    Federation,
    Sse,
    Http,
}

/// Request-line prefixes the lean layer takes, each followed by ` ` or `?`.
const LEAN: [(&[u8], Route); 4] = [
    (b"GET /api/v1/ws", Route::WebSocket),
    (b"GET /api/v1/federation", Route::Federation),
    (b"GET /api/v1/stream/subscribe", Route::Sse),
    (b"GET /api/v1/stream/search", Route::Sse),
];
/// Bytes to peek: the longest prefix and the byte after it.
const PEEK: usize = 29;

/// The route of a request line's first bytes, or `None` while they cannot tell yet.
pub fn classify(start: &[u8]) -> Option<Route> {
    let mut undecided = false;
    for (prefix, route) in LEAN {
        let n = start.len().min(prefix.len());
        if start[..n] != prefix[..n] {
            continue;
        }
        match start.get(prefix.len()) {
            Some(b' ' | b'?') => return Some(route),
            Some(_) => {}
            None => undecided = true,
        }
    }
    (!undecided).then_some(Route::Http)
}

/// Peeks at a new connection until its route is known (`Http` on timeout or EOF).
pub async fn route_of(io: &TcpStream, timeout: Duration) -> Route {
    let mut buf = [0u8; PEEK];
    let deadline = Instant::now() + timeout;
    loop {
        let n = match tokio::time::timeout_at(deadline.into(), io.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return Route::Http,
        };
        if n == 0 {
            return Route::Http;
        }
        if let Some(route) = classify(&buf[..n]) {
            return route;
        }
        // A request line split across packets: wait for more bytes. Peeking leaves the socket
        // readable, so its readiness is cleared first and the wait is on the next arrival (not
        // a timer: 2,000 sockets that sent `G` once cost 0.7 cores polled every 2 ms).
        let _ = io.try_io(tokio::io::Interest::READABLE, || {
            Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
        });
        if tokio::time::timeout_at(deadline.into(), io.readable())
            .await
            .is_err()
        {
            return Route::Http;
        }
    }
}

/// Serves a connection the lean layer took. Each route's future is boxed: unboxed, the
/// connection's task was as large as its largest route (the SSE request's service calls), and
/// an idle WebSocket measured 5.9 KB instead of 2.0 KB (5,000 streams; the task is freed once the
/// stream's actor runs, but the allocator kept the holes).
pub async fn serve(route: Route, io: TcpStream, app: web::Data<AppState>) {
    match route {
        Route::WebSocket => Box::pin(serve_upgrade(io, app, false)).await,
        Route::Federation => Box::pin(serve_upgrade(io, app, true)).await,
        Route::Sse => Box::pin(sse::serve(io, app)).await,
        Route::Http => {}
    }
}

/// Completes a WebSocket upgrade and starts its session actor on this thread (`federation`: the
/// agentic-flow dialect, whose first frame must be its own `auth`).
async fn serve_upgrade(mut io: TcpStream, app: web::Data<AppState>, federation: bool) {
    let timeout = Duration::from_millis(app.settings.server.client_request_timeout_ms);
    let upgrade = match read_head(&mut io, timeout, http1::parse_upgrade).await {
        Head::Parsed(u) => u,
        Head::Bad(why) => {
            metrics::counter!("ruvector_streams_refused_total", "reason" => "bad_upgrade")
                .increment(1);
            refuse(io, &ApiError::invalid(why)).await;
            return;
        }
        Head::Gone => return,
    };
    if !app.lifecycle.is_loaded() {
        let e = EngineError::Overloaded(Overload::Loading);
        refuse(io, &e.into()).await;
        return;
    }
    // Credentials with the upgrade, else an `auth` frame must come first.
    let peer = io.peer_addr().ok().map(|a| a.ip());
    let principal = match (&upgrade.token, app.auth.enabled()) {
        _ if federation => None,
        (_, false) => Some(Arc::new(Principal::anonymous(peer))),
        (Some(t), true) => match app.auth.authenticate(Some(t), peer) {
            Ok(p) => Some(Arc::new(p)),
            Err(e) => {
                refuse(io, &e).await;
                return;
            }
        },
        (None, true) => None,
    };
    let caller = principal
        .clone()
        .unwrap_or_else(|| Arc::new(Principal::anonymous(peer)));
    if let Err(e) = app.supervisor.admit(&caller, Class::Stream) {
        refuse(io, &e).await;
        return;
    }
    let permit = match app.streams.admit(Kind::Ws) {
        Ok(p) => p,
        Err(e) => {
            refuse(io, &e.into()).await;
            return;
        }
    };
    let reply = http1::switching_protocols(&upgrade.accept);
    match tokio::time::timeout(timeout, io.write_all(&reply)).await {
        Ok(Ok(())) => {}
        _ => return,
    }
    let _ = io.set_nodelay(true);
    Session::start(app, principal, io, permit, upgrade.rest, federation);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_routed_on_whole_paths_only() {
        let cases: [(&[u8], Option<Route>); 13] = [
            (b"GET /api/v1/ws HTTP/1.1", Some(Route::WebSocket)),
            (b"GET /api/v1/ws?token=x", Some(Route::WebSocket)),
            (b"GET /api/v1/federation HTTP/1.1", Some(Route::Federation)),
            (b"GET /api/v1/wsx HTTP/1.1", Some(Route::Http)),
            (b"GET /api/v1/stream/subscribe?c", Some(Route::Sse)),
            (b"GET /api/v1/stream/search?k=1", Some(Route::Sse)),
            (b"GET /api/v1/stream/searches ", Some(Route::Http)),
            // Encoded forms are actix-web's (it decodes paths; we do not second-guess it).
            (b"GET /api/v1/%73tream/search?", Some(Route::Http)),
            (b"POST /api/v1/stream/search ", Some(Route::Http)),
            (b"GET /health/ready HTTP/1.1", Some(Route::Http)),
            (b"G", None),
            (b"GET /api/v1/stream/s", None),
            (b"GET /api/v1/ws", None),
        ];
        for (line, want) in cases {
            assert_eq!(classify(line), want, "{}", String::from_utf8_lossy(line));
        }
    }
}
