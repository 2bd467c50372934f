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

/// Registers every route on an actix-web service config: the one route table, each row with
/// the access it demands (see `guard::route`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    use actix_web::http::Method;
    use guard::{route, Access, ADMIN, READ, STREAM, WRITE};
    const GET: Method = Method::GET;
    const PUT: Method = Method::PUT;
    const POST: Method = Method::POST;
    const PATCH: Method = Method::PATCH;
    const DELETE: Method = Method::DELETE;
    cfg.app_data(web::QueryConfig::default().error_handler(rest::query_error))
        .app_data(web::PathConfig::default().error_handler(rest::path_error))
        .service(route(GET, "/health/startup", Access::Open, health::startup))
        .service(route(GET, "/health/live", Access::Open, health::live))
        .service(route(GET, "/health/ready", Access::Open, health::ready))
        .service(route(GET, "/metrics", Access::Metrics, health::metrics))
        .service(
            web::scope("/api/v1")
                .service(route(GET, "/collections", READ, rest::list_collections))
                .service(route(
                    PUT,
                    "/collections/{name}",
                    ADMIN,
                    rest::create_collection,
                ))
                .service(route(
                    GET,
                    "/collections/{name}",
                    READ,
                    rest::get_collection,
                ))
                .service(route(
                    DELETE,
                    "/collections/{name}",
                    ADMIN,
                    rest::delete_collection,
                ))
                .service(route(
                    PUT,
                    "/collections/{name}/points",
                    WRITE,
                    rest::upsert_points,
                ))
                .service(route(
                    POST,
                    "/collections/{name}/points/search",
                    READ,
                    rest::search_points,
                ))
                .service(route(
                    POST,
                    "/collections/{name}/points/search/batch",
                    READ,
                    rest::search_batch,
                ))
                .service(route(
                    GET,
                    "/collections/{name}/points/{id}",
                    READ,
                    rest::get_point,
                ))
                .service(route(
                    PATCH,
                    "/collections/{name}/points/{id}",
                    WRITE,
                    rest::patch_point,
                ))
                .service(route(
                    DELETE,
                    "/collections/{name}/points/{id}",
                    WRITE,
                    rest::delete_point,
                ))
                .service(route(GET, "/ws", Access::Open, ws_not_first))
                .service(route(POST, "/stream/search", STREAM, sse::search_post))
                .service(route(GET, "/stream/search", STREAM, sse::search_get))
                .service(route(GET, "/stream/subscribe", STREAM, sse::subscribe))
                .service(route(POST, "/insert", WRITE, rest::short_insert))
                .service(route(POST, "/search", READ, rest::short_search))
                .service(route(GET, "/search", READ, rest::short_search_get)),
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
    // A bounded label set: any other token a client sends as a method is `other`.
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "PUT" => "PUT",
        "POST" => "POST",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let fut = srv.call(req);
    async move {
        let res = fut.await?;
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".into());
        let status = res.status().as_u16().to_string();
        metrics::counter!("ruvector_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
            .increment(1);
        metrics::histogram!("ruvector_http_request_duration_seconds", "route" => route, "method" => method)
            .record(t.elapsed().as_secs_f64());
        Ok(res)
    }
}
