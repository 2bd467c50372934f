//! The HTTP edge: routes (PROTOCOL.md), JSON errors, request metrics.

pub mod body;
pub mod error;
pub mod guard;
pub mod health;
pub mod rest;

use std::sync::Arc;
use std::time::Instant;

use actix::Addr;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::{web, HttpRequest, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;
use ruvector_actors::router::Router;
use ruvector_actors::EngineError;

use crate::auth::Auth;
use crate::settings::Settings;
use crate::stream::{sse, Streams};
use crate::supervise::Supervisor;
use error::ApiError;
use health::Health;
use ruvector_actors::hub::Hub;

/// What every handler can reach.
pub struct AppState {
    pub router: Addr<Router>,
    pub settings: Arc<Settings>,
    pub health: Arc<Health>,
    pub prometheus: Option<PrometheusHandle>,
    pub hub: Arc<Hub>,
    pub streams: Arc<Streams>,
    pub auth: Arc<Auth>,
    pub supervisor: Arc<Supervisor>,
}

/// Reached only by a WebSocket upgrade sent after other requests on a keep-alive connection: the
/// WebSocket layer takes a connection's first request only.
async fn ws_not_first() -> Result<HttpResponse, ApiError> {
    Err(ApiError::invalid(
        "a WebSocket upgrade must be the first request on its connection",
    ))
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(EngineError::NotFound(format!("route {} {}", req.method(), req.path())).into())
}

/// Registers every route on an actix-web service config.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(rest::query_error))
        .app_data(web::PathConfig::default().error_handler(rest::path_error))
        .route("/health/startup", web::get().to(health::startup))
        .route("/health/live", web::get().to(health::live))
        .route("/health/ready", web::get().to(health::ready))
        .route("/metrics", web::get().to(health::metrics))
        .service(
            web::scope("/api/v1")
                .route("/collections", web::get().to(rest::list_collections))
                .route(
                    "/collections/{name}",
                    web::put().to(rest::create_collection),
                )
                .route("/collections/{name}", web::get().to(rest::get_collection))
                .route(
                    "/collections/{name}",
                    web::delete().to(rest::delete_collection),
                )
                .route(
                    "/collections/{name}/points",
                    web::put().to(rest::upsert_points),
                )
                .route(
                    "/collections/{name}/points/search",
                    web::post().to(rest::search_points),
                )
                .route(
                    "/collections/{name}/points/search/batch",
                    web::post().to(rest::search_batch),
                )
                .route(
                    "/collections/{name}/points/{id}",
                    web::get().to(rest::get_point),
                )
                .route(
                    "/collections/{name}/points/{id}",
                    web::patch().to(rest::patch_point),
                )
                .route(
                    "/collections/{name}/points/{id}",
                    web::delete().to(rest::delete_point),
                )
                .route("/ws", web::get().to(ws_not_first))
                .route("/stream/search", web::post().to(sse::search_post))
                .route("/stream/search", web::get().to(sse::search_get))
                .route("/stream/subscribe", web::get().to(sse::subscribe))
                .route("/insert", web::post().to(rest::short_insert))
                .route("/search", web::post().to(rest::short_search))
                .route("/search", web::get().to(rest::short_search_get)),
        )
        .default_service(web::to(not_found));
}

/// Counts requests by route and status and times them (a histogram per route).
pub fn record<S, B>(
    req: actix_web::dev::ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<ServiceResponse<B>, actix_web::Error>> + use<S, B>
where
    S: Service<
        actix_web::dev::ServiceRequest,
        Response = ServiceResponse<B>,
        Error = actix_web::Error,
    >,
{
    let t = Instant::now();
    let method = req.method().to_string();
    let fut = srv.call(req);
    async move {
        let res = fut.await?;
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".into());
        let status = res.status().as_u16().to_string();
        metrics::counter!("ruvector_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
            .increment(1);
        metrics::histogram!("ruvector_http_request_duration_seconds", "route" => route, "method" => method)
            .record(t.elapsed().as_secs_f64());
        Ok(res)
    }
}
