//! The gate every routed HTTP request passes before its handler: authentication, the scope of
//! the route actix matched, then admission (shedding) and rate limiting. Unmatched requests
//! never reach a gate or a handler: they are 404 at the router. The caller's `Principal` is left in the request's
//! extensions for handlers (`Caller`).

use std::future::{ready, Future, Ready};
use std::sync::Arc;

use actix_web::body::{BoxBody, EitherBody};
use actix_web::dev::{Payload, Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, Resource, Responder, ResponseError};

use crate::auth::{token_of, Principal, Scope};
use crate::error::ApiError;
use crate::service::gate::admit_request;
use crate::state::AppState;
use crate::supervise::Class;

/// What a route demands of its caller. Attached to the route itself (see `route`), so the
/// decision is made on the resource actix actually matched — after its own path decoding —
/// never by parsing the raw path a second time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Health probes: no credentials, no admission.
    Open,
    /// `/metrics`: `admin` when auth is on and `auth.metrics_admin` (the default), open otherwise.
    Metrics,
    /// A scope and the rate-limit class the request is counted in.
    Needs(Scope, Class),
}

pub const READ: Access = Access::Needs(Scope::Read, Class::Read);
pub const WRITE: Access = Access::Needs(Scope::Write, Class::Write);
pub const ADMIN: Access = Access::Needs(Scope::Admin, Class::Write);
pub const STREAM: Access = Access::Needs(Scope::Read, Class::Stream);
pub const COORD_READ: Access = Access::Needs(Scope::Coordinate, Class::Read);
pub const COORD_WRITE: Access = Access::Needs(Scope::Coordinate, Class::Write);

/// One row of the route table: `method path` served by `handler`, gated by `access`. The
/// resource carries the method as its own guard, so a request whose method does not fit falls
/// through to the next resource of the same path (e.g. `DELETE …/points/search` reaches the
/// point whose id is `search`, and is gated as a point delete).
pub fn route<F, Args>(
    method: Method,
    path: &str,
    access: Access,
    handler: F,
) -> Resource<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<EitherBody<BoxBody>>,
        Error = actix_web::Error,
        InitError = (),
    >,
>
where
    F: actix_web::Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    web::resource(path)
        .guard(actix_web::guard::Method(method.clone()))
        .route(web::method(method).to(handler))
        .wrap_fn(move |req, srv| gate(access, req, srv))
}

fn check(
    app: &AppState,
    access: Access,
    req: &ServiceRequest,
) -> Result<Option<Arc<Principal>>, ApiError> {
    let (scope, class) = match access {
        Access::Open => return Ok(None),
        // Scrapes are never rate-limited; with auth on they need `admin` (by default).
        Access::Metrics if !app.auth.metrics_admin || !app.auth.enabled() => return Ok(None),
        Access::Metrics => (Scope::Admin, Class::Read),
        Access::Needs(scope, class) => (scope, class),
    };
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let token = token_of(authorization, req.query_string());
    let peer = req.peer_addr().map(|a| a.ip());
    admit_request(app, token, peer, scope, class).map(Some)
}

/// The gate of one matched route: authentication, the route's scope, admission, rate limits.
pub(crate) fn gate<S, B>(
    access: Access,
    req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    let app = req.app_data::<web::Data<AppState>>().cloned();
    let verdict = match &app {
        Some(app) => check(app, access, &req),
        None => Ok(None),
    };
    // A request with a body counts in flight once its body is complete (`body::read_json`).
    let has_body = matches!(*req.method(), Method::PUT | Method::POST | Method::PATCH);
    let inflight = app.filter(|_| !has_body).map(|app| app.supervisor.begin());
    let next = match verdict {
        Ok(principal) => {
            if let Some(p) = principal {
                req.extensions_mut().insert(p);
            }
            futures_util::future::Either::Left(srv.call(req))
        }
        Err(e) => futures_util::future::Either::Right(
            req.into_response(e.error_response())
                .map_into_right_body::<B>(),
        ),
    };
    async move {
        let _inflight = inflight;
        match next {
            futures_util::future::Either::Left(fut) => Ok(fut.await?.map_into_left_body()),
            futures_util::future::Either::Right(res) => Ok(res),
        }
    }
}

/// The calling principal, as the guard found it (anonymous on open routes).
pub struct Caller(pub Arc<Principal>);

impl FromRequest for Caller {
    type Error = actix_web::Error;
    type Future = Ready<Result<Caller, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let p = req
            .extensions()
            .get::<Arc<Principal>>()
            .cloned()
            .unwrap_or_else(|| Arc::new(Principal::anonymous(req.peer_addr().map(|a| a.ip()))));
        ready(Ok(Caller(p)))
    }
}

impl std::ops::Deref for Caller {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.0
    }
}
