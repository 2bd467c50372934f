//! The HTTP transport (actix-web): the one route table (PROTOCOL.md), each route with its gate
//! (`guard`), bounded bodies (`body`), thin handlers over the service layer (`collections`,
//! `points`, `search`, `sse`), probes and `/metrics` (`health`), the HTTP face of errors
//! (`error`) and request metrics (`record`).

pub mod body;
pub mod collections;
pub mod coordination;
pub mod error;
pub mod guard;
pub mod health;
pub mod mcp;
pub mod points;
pub mod search;
pub mod sse;

use std::time::Instant;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::{web, HttpRequest, HttpResponse};
use ruvector_actors::EngineError;

use crate::error::ApiError;

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
    use coordination as co;
    use guard::{route, Access, ADMIN, COORD_READ, COORD_WRITE, READ, STREAM, WRITE};
    const GET: Method = Method::GET;
    const PUT: Method = Method::PUT;
    const POST: Method = Method::POST;
    const PATCH: Method = Method::PATCH;
    const DELETE: Method = Method::DELETE;
    cfg.app_data(web::QueryConfig::default().error_handler(search::query_error))
        .app_data(web::PathConfig::default().error_handler(search::path_error))
        .service(route(GET, "/health/startup", Access::Open, health::startup))
        .service(route(GET, "/health/live", Access::Open, health::live))
        .service(route(GET, "/health/ready", Access::Open, health::ready))
        .service(route(GET, "/metrics", Access::Metrics, health::metrics))
        .service(
            web::scope("/api/v1")
                // The hottest routes first: actix tries resources in order and every pattern with
                // a `{name}` costs a regex match (≈ 6% of a small search's CPU when search came
                // sixth). Only order among overlapping patterns matters (…/points/search before
                // …/points/{id}), and it is kept.
                .service(route(
                    POST,
                    "/collections/{name}/points/search",
                    READ,
                    search::search_points,
                ))
                .service(route(
                    PUT,
                    "/collections/{name}/points",
                    WRITE,
                    points::upsert_points,
                ))
                .service(route(
                    GET,
                    "/collections",
                    READ,
                    collections::list_collections,
                ))
                .service(route(
                    PUT,
                    "/collections/{name}",
                    ADMIN,
                    collections::create_collection,
                ))
                .service(route(
                    GET,
                    "/collections/{name}",
                    READ,
                    collections::get_collection,
                ))
                .service(route(
                    DELETE,
                    "/collections/{name}",
                    ADMIN,
                    collections::delete_collection,
                ))
                .service(route(
                    GET,
                    "/collections/{name}/points",
                    READ,
                    points::list_points,
                ))
                .service(route(
                    POST,
                    "/collections/{name}/points/search/batch",
                    READ,
                    search::search_batch,
                ))
                .service(route(
                    GET,
                    "/collections/{name}/points/{id}",
                    READ,
                    points::get_point,
                ))
                .service(route(
                    PATCH,
                    "/collections/{name}/points/{id}",
                    WRITE,
                    points::patch_point,
                ))
                .service(route(
                    DELETE,
                    "/collections/{name}/points/{id}",
                    WRITE,
                    points::delete_point,
                ))
                .service(route(GET, "/ws", Access::Open, ws_not_first))
                .service(route(POST, "/stream/search", STREAM, sse::search_post))
                .service(route(GET, "/stream/search", STREAM, sse::search_get))
                .service(route(GET, "/stream/subscribe", STREAM, sse::subscribe))
                .service(route(POST, "/insert", WRITE, points::short_insert))
                .service(route(POST, "/search", READ, search::short_search))
                .service(route(GET, "/search", READ, search::short_search_get))
                .service(route(
                    PUT,
                    "/coordination/agents/{agent_id}",
                    COORD_WRITE,
                    co::with_body("agent_register"),
                ))
                .service(route(
                    POST,
                    "/coordination/agents/{agent_id}/heartbeat",
                    COORD_WRITE,
                    co::with_body("heartbeat"),
                ))
                .service(route(GET, "/coordination/agents", COORD_READ, co::agents))
                .service(route(
                    POST,
                    "/coordination/tasks",
                    COORD_WRITE,
                    co::with_body("task_create"),
                ))
                .service(route(
                    POST,
                    "/coordination/tasks/claim",
                    COORD_WRITE,
                    co::with_body("task_claim"),
                ))
                .service(route(
                    POST,
                    "/coordination/tasks/similar",
                    COORD_READ,
                    co::with_body("similar_tasks"),
                ))
                .service(route(
                    GET,
                    "/coordination/tasks/{task_id}",
                    COORD_READ,
                    co::from_path("task_status"),
                ))
                .service(route(
                    POST,
                    "/coordination/tasks/{task_id}/complete",
                    COORD_WRITE,
                    co::with_body("task_complete"),
                ))
                .service(route(
                    POST,
                    "/coordination/tasks/{task_id}/fail",
                    COORD_WRITE,
                    co::with_body("task_fail"),
                ))
                .service(route(
                    POST,
                    "/coordination/topics/{topic}/messages",
                    COORD_WRITE,
                    co::with_body("publish"),
                ))
                .service(route(
                    GET,
                    "/coordination/topics/{topic}/messages",
                    COORD_READ,
                    co::topic_messages,
                ))
                .service(route(
                    PUT,
                    "/coordination/memory/{namespace}/{key}",
                    COORD_WRITE,
                    co::with_body("memory_store"),
                ))
                .service(route(
                    GET,
                    "/coordination/memory/{namespace}/{key}",
                    COORD_READ,
                    co::from_path("memory_retrieve"),
                ))
                .service(route(
                    DELETE,
                    "/coordination/memory/{namespace}/{key}",
                    COORD_WRITE,
                    co::from_path("memory_delete"),
                ))
                .service(route(
                    POST,
                    "/coordination/memory/{namespace}/search",
                    COORD_READ,
                    co::with_body("memory_search"),
                )),
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
