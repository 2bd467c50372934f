//! The gate every HTTP request passes before its handler: authentication, the route's scope,
//! then admission (shedding) and rate limiting. The caller's `Principal` is left in the request's
//! extensions for handlers (`Caller`).

use std::future::{ready, Future, Ready};
use std::sync::Arc;

use actix_web::body::EitherBody;
use actix_web::dev::{Payload, Service, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::{FromRequest, HttpMessage, HttpRequest, ResponseError};

use super::error::ApiError;
use super::AppState;
use crate::auth::{token_of, Principal, Scope};
use crate::supervise::Class;

/// The scope a route needs (`None`: open), and its rate-limit class.
pub fn route_needs(method: &Method, path: &str, metrics_admin: bool) -> Option<(Scope, Class)> {
    if path.starts_with("/health/") {
        return None;
    }
    if path == "/metrics" {
        return metrics_admin.then_some((Scope::Admin, Class::Read));
    }
    let read = Some((Scope::Read, Class::Read));
    let write = Some((Scope::Write, Class::Write));
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return read;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let get = method == Method::GET;
    match parts.as_slice() {
        ["collections"] => read,
        ["collections", _] if get => read,
        ["collections", _] => Some((Scope::Admin, Class::Write)),
        ["collections", _, "points"] => write,
        ["collections", _, "points", "search", ..] => read,
        ["collections", _, "points", _] if get => read,
        ["collections", _, "points", _] => write,
        ["insert"] => write,
        ["stream", ..] => Some((Scope::Read, Class::Stream)),
        ["coordination", ..] => Some((Scope::Coordinate, Class::Write)),
        _ => read,
    }
}

fn check(app: &AppState, req: &ServiceRequest) -> Result<Option<Arc<Principal>>, ApiError> {
    let Some((scope, class)) = route_needs(req.method(), req.path(), app.auth.metrics_admin) else {
        return Ok(None);
    };
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let token = token_of(authorization, req.query_string());
    let peer = req.peer_addr().map(|a| a.ip());
    let principal = Arc::new(app.auth.authenticate(token, peer)?);
    principal.require(scope)?;
    app.supervisor.admit(&principal, class)?;
    Ok(Some(principal))
}

/// actix-web middleware (`wrap_fn`).
pub fn guard<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>> + use<S, B>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    let verdict = match req.app_data::<actix_web::web::Data<AppState>>() {
        Some(app) => check(app, &req),
        None => Ok(None),
    };
    let inflight = req
        .app_data::<actix_web::web::Data<AppState>>()
        .map(|app| app.supervisor.begin());
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
