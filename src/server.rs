//! The listener: one port for REST, SSE and WebSocket.
//!
//! actix-server accepts connections on its worker threads; each new connection's request line is
//! peeked at (not consumed, `stream::accept`). WebSocket upgrades and SSE `GET`s go to the lean
//! connection layer (`stream`), which starts their actor on that worker's arbiter; everything
//! else goes to actix-web's HTTP service, exactly as `HttpServer` would run it.

use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::time::Duration;

use actix_http::{HttpService, KeepAlive};
use actix_server::{Server, ServerHandle};
use actix_service::{
    fn_factory, fn_service, map_config, IntoServiceFactory, Service, ServiceFactory,
    ServiceFactoryExt,
};
use actix_web::dev::AppConfig;
use actix_web::{web, App};
use tokio::net::TcpStream;

use crate::http;
use crate::state::AppState;
use crate::stream::accept::{self, Route};

/// Binds the port and starts the server; returns its handle and bound addresses.
pub fn serve(
    state: web::Data<AppState>,
    workers: usize,
) -> std::io::Result<(ServerHandle, Vec<SocketAddr>)> {
    let s = state.settings.server.clone();
    let listener = TcpListener::bind((s.host.as_str(), s.port))?;
    let addrs = vec![listener.local_addr()?];
    let keep_alive = Duration::from_millis(s.keep_alive_ms);
    let request_timeout = Duration::from_millis(s.client_request_timeout_ms);
    let disconnect = Duration::from_millis(s.client_disconnect_timeout_ms);
    let local = addrs[0];
    let mcp = http::mcp::service(state.clone());
    let server = Server::build()
        .workers(workers)
        .max_concurrent_connections(s.max_connections)
        .shutdown_timeout(s.drain_timeout_ms.div_ceil(1000))
        .disable_signals()
        .listen("ruvector", listener, move || {
            let state = state.clone();
            let app_state = state.clone();
            let mcp = mcp.clone();
            let lifecycle = state.lifecycle.clone();
            let http = HttpService::build()
                // Idle keep-alive connections close at once when the server drains.
                .graceful_shutdown_signal(move || {
                    let mut signal = lifecycle.drain_signal();
                    async move {
                        let _ = signal.wait_for(|d| *d).await;
                    }
                })
                .keep_alive(KeepAlive::Timeout(keep_alive))
                // After answering early (413, 429, …) keep reading what the client still sends
                // for a moment, so it sees the answer instead of a reset (as HttpServer does).
                .client_disconnect_timeout(disconnect)
                .h1_allow_half_closed(true)
                .local_addr(local)
                .client_request_timeout(request_timeout)
                .finish(map_config(
                    App::new()
                        .app_data(app_state)
                        .wrap_fn(http::record)
                        .configure(http::routes)
                        .service(mcp.scope_with_path("/mcp").wrap_fn(|req, srv| {
                            http::guard::gate(http::guard::COORD_WRITE, req, srv)
                        }))
                        .into_factory()
                        .map_err(|e| e.error_response()),
                    |_| AppConfig::default(),
                ))
                .tcp();
            fn_factory(move || {
                let http = http.new_service(());
                let state = state.clone();
                async move {
                    let http = Rc::new(http.await?);
                    Ok::<_, ()>(fn_service(move |io: TcpStream| {
                        let http = http.clone();
                        let state = state.clone();
                        async move {
                            let route = accept::route_of(&io, request_timeout).await;
                            if route != Route::Http {
                                accept::serve(route, io, state).await;
                                Ok::<_, ()>(())
                            } else {
                                // Boxed, like the lean routes: the task of every connection is as
                                // small as its first await (a streaming connection keeps none of it).
                                Box::pin(http.call(io)).await.map_err(|e| {
                                    tracing::debug!(error = ?e, "HTTP connection ended with an error");
                                })
                            }
                        }
                    }))
                }
            })
        })?
        .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok((handle, addrs))
}
